"""Execute every tour notebook in a fresh kernel running this interpreter, so the notebooks never drift.

Each notebook runs in its own temporary working directory (it must write only
there) with ``nbclient``; any cell error fails the test and names the cell.
The kernel is this test's own Python (``sys.executable``) through a kernelspec
written to a temporary folder, so a ``python3`` kernelspec elsewhere on the
machine (a user's or the system's) can never run the notebooks with another
interpreter or another medres.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
SAMPLE_DATA = REPO / "sample_data"
NOTEBOOKS = ("01_chest_xray_quickstart.ipynb", "02_ct_segmentation.ipynb", "03_review_results.ipynb")
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


def test_notebooks_are_built_from_the_generator_without_outputs():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    build_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_notebooks)
    expected = build_notebooks.rendered_notebooks()
    assert sorted(path.name for path in expected) == sorted(NOTEBOOKS)
    for path, text in expected.items():
        assert path.read_text() == text, f"{path.name} is stale: run python notebooks/build_notebooks.py"
        notebook = nbformat.reads(text, as_version=4)
        assert all(not cell.get("outputs") and cell.get("execution_count") is None
                   for cell in notebook.cells if cell.cell_type == "code")
        assert "synthetic" in notebook.cells[0].source.lower()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="test-interpreter"))
    workdir = tmp_path / "work"
    workdir.mkdir()
    use_this_interpreter_as_kernel(tmp_path / "jupyter", monkeypatch)
    repo_files_before = files_under(NOTEBOOK_DIR, SAMPLE_DATA)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(workdir)}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{name}: a cell failed:\n{error}", pytrace=False)
    finally:
        nbformat.write(notebook, tmp_path / name)  # executed copy, with outputs, for a look after a failure
    print(f"\n{name}: executed in {time.perf_counter() - started:.0f} s")
    assert notebook.cells[0].outputs[0].text.strip() == sys.executable, "the kernel ran another Python"
    assert "Traceback" not in cell_outputs_text(notebook), "a traceback was printed (e.g. logged by a worker)"
    assert any(workdir.iterdir()), "the notebook wrote nothing into its working directory"
    assert files_under(NOTEBOOK_DIR, SAMPLE_DATA) == repo_files_before, "the notebook wrote into the repository"
