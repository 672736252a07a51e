"""medres from a built wheel, away from the source tree: `medres app --help` and the review app both work.

A wheel is built from a copy of the sources (so the build leaves nothing in
the checkout) and installed, without its dependencies, into a fresh virtual
environment. The dependencies come from the test environment's
site-packages through a ``.pth`` line: a path line adds that folder to
``sys.path`` without processing the ``.pth`` files inside it, so the editable
install of the checkout stays invisible, and every ``medres`` module the
commands import is the installed copy (checked, not assumed). Nothing is
downloaded: the build uses the test environment's setuptools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "README.md")
TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def isolated_environment() -> dict[str, str]:
    """The environment minus anything that could put the checkout on ``sys.path``."""
    return {name: value for name, value in os.environ.items()
            if name not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV")}


def run(command: list[str], cwd: Path, **options) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S,
                            env={**isolated_environment(), **options.pop("env", {})}, **options)
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def build_wheel(work: Path) -> Path:
    """``pip wheel`` of a copy of the package sources, with the test environment's setuptools, offline."""
    source = work / "source"
    shutil.copytree(REPO / "medres", source / "medres", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in BUILD_FILES:
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", str(work / "dist"), str(source)], cwd=work)
    (wheel,) = (work / "dist").glob("medres-*.whl")
    return wheel


def make_venv(work: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel, with the test environment's site-packages as a plain path line."""
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    new_site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=work).stdout.strip())
    (new_site / "medres_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
         str(wheel)], cwd=work)
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fresh venv with medres installed from its wheel."""
    work = tmp_path_factory.mktemp("wheel_install")
    return make_venv(work, build_wheel(work))


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A working folder outside the checkout, so the current directory cannot provide medres either."""
    assert REPO not in tmp_path.resolve().parents
    return tmp_path


def test_the_wheel_holds_the_app_page_and_package_data(installed: Path) -> None:
    (wheel,) = installed.parent.glob("dist/medres-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "medres/app/review.py" in names
    assert any(name.startswith("medres/evaluate/") and name.endswith(".csv") for name in names)
    assert not any(name.startswith(("tests/", "apps/", "notebooks/")) for name in names)


def test_installed_medres_is_the_wheels_copy(installed: Path, outside: Path) -> None:
    result = run([str(installed / "bin" / "python"), "-c",
                  "import medres, medres.cli.app as app; print(medres.__file__); print(app.app_script())"],
                 cwd=outside)
    package_file, app_script = map(Path, result.stdout.split())
    assert installed in package_file.parents, f"medres imported from {package_file}, not the fresh venv"
    assert installed in app_script.parents and app_script.name == "review.py"


def test_medres_app_help_from_the_installed_wheel(installed: Path, outside: Path) -> None:
    result = run([str(installed / "bin" / "medres"), "app", "--help"], cwd=outside)
    assert "--root" in result.stdout and "--checkpoint" in result.stdout


SMOKE = textwrap.dedent("""
    import json, os, shutil, sys
    from pathlib import Path

    import medres
    from medres.cli.app import app_script
    from medres.models import create_model, save_checkpoint
    from streamlit.testing.v1 import AppTest

    root, sample = Path(sys.argv[1]), Path(sys.argv[2])
    root.mkdir()
    shutil.copy(sample, root / "chest.png")
    checkpoint = save_checkpoint(create_model("chexnet_tiny"), root.parent / "chexnet_tiny.safetensors")
    os.environ.update(MEDRES_APP_ROOT=str(root), MEDRES_APP_CHECKPOINT=str(checkpoint))
    app = AppTest.from_file(str(app_script()), default_timeout=120).run()
    browsed = app.selectbox(key="browse_choice").options
    app.selectbox(key="browse_choice").set_value("chest.png")
    app.button(key="browse_open").click().run()
    print(json.dumps({
        "medres": medres.__file__, "script": str(app_script()), "browsed": browsed,
        "exceptions": [str(item.value) for item in app.exception], "errors": [item.value for item in app.error],
        "warnings": [item.value for item in app.warning], "classes": app.selectbox(key="cam_class").options,
        "modules": sorted({module.__file__ for name, module in sys.modules.items()
                           if name.split(".")[0] == "medres" and getattr(module, "__file__", None)}),
    }))
""")


def test_review_app_smoke_from_the_installed_wheel(installed: Path, outside: Path) -> None:
    """The installed page opens on a root and a checkpoint, lists the root and scores an X-ray."""
    result = run([str(installed / "bin" / "python"), "-c", SMOKE, str(outside / "root"),
                  str(REPO / "sample_data" / "chest.png")], cwd=outside)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert installed in Path(report["script"]).parents
    assert [module for module in report["modules"] if installed not in Path(module).parents] == []
    assert report["exceptions"] == [] and report["errors"] == []
    assert any("Research use only" in text for text in report["warnings"])
    assert report["browsed"] == ["chest.png"]
    assert len(report["classes"]) == 14, "the classifier scored the image and offers Grad-CAM for each label"
