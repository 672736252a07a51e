"""Check the tour notebooks against their jupytext scripts, and execute each one, so the notebooks never drift.

Each notebook's source is a jupytext percent script (``notebooks/NAME.py``);
the committed ``NAME.ipynb`` is generated from it and must hold the same cells,
without outputs. Each notebook runs in its own temporary working directory (it
must write only there) with ``nbclient``; any cell error fails the test and
names the cell. The kernel is this test's own Python (``sys.executable``)
through a kernelspec written to a temporary folder, so a ``python3`` kernelspec
elsewhere on the machine (a user's or the system's) can never run the notebooks
with another interpreter or another medres.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
SAMPLE_DATA = REPO / "sample_data"
NOTEBOOKS = ("01_chest_xray_quickstart", "02_ct_segmentation", "03_review_results")
PAIRED_FORMATS = "ipynb,py:percent"
REGENERATE = "jupytext --to ipynb --update notebooks/{name}.py"
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 600


def use_this_interpreter_as_kernel(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``python3`` mean ``sys.executable -m ipykernel_launcher`` for kernels started from this process.

    ``JUPYTER_PATH`` comes before the user's and the system's Jupyter folders,
    and the runtime folder (connection files) moves into ``folder`` so a CI
    machine needs no writable ``~/.local/share/jupyter``.
    """
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (medres tests)", "language": "python", "metadata": {"debugger": False}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(folder))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(folder / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(folder / "ipython"))
    if "OMP_NUM_THREADS" not in os.environ:
        # One torch thread, as the other tiny-model tests use (tests/score, tests/segmentation): on a loaded
        # 2-core machine OpenMP threads wait for each other; on an idle one a thread less costs little here.
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert KernelSpecManager().get_kernel_spec(KERNEL_NAME).argv[0] == sys.executable


def make_shared_helper_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put ``notebooks/`` on the kernel's ``PYTHONPATH``, for ``from _helpers import medres``.

    Jupyter starts a kernel in the notebook's own folder, where the import works
    as it is; the tests start it in a temporary working directory instead.
    """
    folders = [str(NOTEBOOK_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(folders))


def files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders if folder.is_dir() for path in folder.rglob("*")
            if "__pycache__" not in path.parts}


def cell_outputs_text(notebook: nbformat.NotebookNode) -> str:
    """Every stream and text/plain output of the executed notebook, for content checks."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def cell_sources(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """Each cell's type and source, the part of a notebook its jupytext script holds."""
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def test_each_notebook_has_its_jupytext_script():
    scripts = sorted(path.stem for path in NOTEBOOK_DIR.glob("[0-9]*.py"))
    notebooks = sorted(path.stem for path in NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    assert scripts == notebooks == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_the_cells_of_its_script_and_no_outputs(name: str):
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    assert cell_sources(notebook) == cell_sources(script), f"{name}.ipynb is stale: run {REGENERATE.format(name=name)}"
    assert script.metadata["jupytext"]["formats"] == notebook.metadata["jupytext"]["formats"] == PAIRED_FORMATS
    assert notebook.metadata["kernelspec"]["name"] == KERNEL_NAME
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in notebook.cells if cell.cell_type == "code"), f"{name}.ipynb was committed with outputs"
    assert notebook.cells[0].cell_type == "markdown" and "synthetic" in notebook.cells[0].source.lower()


def test_the_command_runner_is_written_once_in_the_shared_helper():
    defining = [path.name for path in sorted(NOTEBOOK_DIR.glob("*.py")) if "def medres(" in path.read_text()]
    assert defining == ["_helpers.py"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="test-interpreter"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    use_this_interpreter_as_kernel(tmp_path / "jupyter", monkeypatch)
    make_shared_helper_importable(monkeypatch)
    repo_files_before = files_under(NOTEBOOK_DIR, SAMPLE_DATA)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(workdir)}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name}: a cell failed:\n{error}", pytrace=False)
    finally:
        nbformat.write(notebook, tmp_path / f"{name}.ipynb")  # executed, with outputs: to look at after a failure
    print(f"\n{name}: executed in {time.perf_counter() - started:.0f} s")
    assert notebook.cells[0].outputs[0].text.strip() == sys.executable, "the kernel ran another Python"
    assert "Traceback" not in cell_outputs_text(notebook), "a traceback was printed (e.g. logged by a worker)"
    assert any(workdir.iterdir()), "the notebook wrote nothing into its working directory"
    assert files_under(NOTEBOOK_DIR, SAMPLE_DATA) == repo_files_before, "the notebook wrote into the repository"
