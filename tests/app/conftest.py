"""Fixtures for the review app: a root with samples and real `medres score` output, tiny checkpoints, an AppTest."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medres.models import CXR14_LABELS, create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
APP_SCRIPT = REPO / "medres" / "app" / "review.py"  # the page `medres app` runs (apps/review.py runs it too)
APP_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained chexnet_tiny: the app's behaviour, not the model's quality, is under test."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "chexnet_tiny.safetensors"
    save_checkpoint(create_model("chexnet_tiny"), path)
    return path


@pytest.fixture(scope="session")
def all_positive_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained chexnet_tiny with every threshold at 0: every call is positive, so `score --heatmaps`
    writes a heatmap for every label of every image."""
    torch.manual_seed(0)
    model = create_model("chexnet_tiny", thresholds={label: 0.0 for label in CXR14_LABELS})
    return save_checkpoint(model, tmp_path_factory.mktemp("checkpoint") / "all_positive.safetensors")


def run_score(input_dir: str | Path, out_dir: str | Path, checkpoint: Path, *options: str) -> int:
    """The real `medres score --heatmaps` (its CLI entry point); relative paths are taken from the cwd."""
    from medres.cli.main import main

    return main(["score", str(input_dir), "--checkpoint", str(checkpoint), "--out", str(out_dir), "--heatmaps",
                 "--no-progress", *options])


@pytest.fixture(scope="session")
def scored_samples(tmp_path_factory: pytest.TempPathFactory, all_positive_checkpoint: Path) -> Path:
    """A root made once per session: the committed samples in `samples/`, and `scored/` written by
    `medres score --heatmaps` on them, run from the root's parent with relative paths."""
    root = tmp_path_factory.mktemp("scored_samples") / "root"
    shutil.copytree(REPO / "sample_data", root / "samples")
    with contextlib.chdir(root.parent):
        assert run_score("root/samples", "root/scored", all_positive_checkpoint) == 0
    return root


@pytest.fixture()
def app_root(tmp_path: Path, scored_samples: Path, all_positive_checkpoint: Path) -> Path:
    """A root folder: the committed samples plus a real `medres score --heatmaps` output folder `scored/`.

    The session's scored root is copied (modification times kept) and `score`
    is run again on the copy: it resumes the files from the copied journal
    (no model runs) and writes the copy's own tables and `run.json`, whose
    input root is this copy's `samples/`.
    """
    root = tmp_path / "root"
    shutil.copytree(scored_samples, root, symlinks=True)
    assert run_score(root / "samples", root / "scored", all_positive_checkpoint) == 0
    return root


@pytest.fixture()
def make_app(monkeypatch: pytest.MonkeyPatch, app_root: Path, tiny_checkpoint: Path) -> Callable:
    """Build an AppTest of the review app (medres/app/review.py) configured through MEDRES_APP_* variables."""
    from streamlit.testing.v1 import AppTest

    def build(root: Path = app_root, checkpoint: Path | None = tiny_checkpoint, **variables: str) -> AppTest:
        monkeypatch.setenv("MEDRES_APP_ROOT", str(root))
        if checkpoint is None:
            monkeypatch.delenv("MEDRES_APP_CHECKPOINT", raising=False)
        else:
            monkeypatch.setenv("MEDRES_APP_CHECKPOINT", str(checkpoint))
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return AppTest.from_file(str(APP_SCRIPT), default_timeout=APP_TIMEOUT_S)

    return build


def messages(app) -> list[str]:
    """Every error, warning and info text on the page."""
    return [element.value for kind in (app.error, app.warning, app.info) for element in kind]


def open_by_browsing(app, relative: str):
    """Navigate the browse control into the folder of ``relative`` and open it."""
    parts = relative.split("/")
    app.run()
    for depth in range(len(parts) - 1):
        app.selectbox(key="browse_choice").set_value("/".join(parts[:depth + 1]))
        app.button(key="browse_enter").click().run()
    app.selectbox(key="browse_choice").set_value(relative)
    return app.button(key="browse_open").click().run()


def open_worklist(app, folder: str = "scored"):
    """Switch a running AppTest to the worklist and open a `medres score` output folder under the root."""
    app.radio(key="mode").set_value("Worklist").run()
    return app.text_input(key="worklist_folder").set_value(folder).run()
