"""Fixtures for the review app: a root folder with samples, an untrained tiny checkpoint, an AppTest."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image as PILImage

from medres.models import CXR14_LABELS, create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
APP_SCRIPT = REPO / "apps" / "review.py"
APP_TIMEOUT_S = 120



@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained chexnet_tiny: the app's behaviour, not the model's quality, is under test."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "chexnet_tiny.safetensors"
    save_checkpoint(create_model("chexnet_tiny"), path)
    return path


@pytest.fixture()
def app_root(tmp_path: Path) -> Path:
    """A root folder: the committed samples plus a fake `medres score` output folder."""
    root = tmp_path / "root"
    shutil.copytree(REPO / "sample_data", root / "samples")
    write_score_output(root / "scored", ["samples/chest.png", "samples/cr_chest_monochrome1.dcm"])
    return root


def write_score_output(folder: Path, paths: list[str]) -> Path:
    """A small output folder shaped like `medres score`'s: scores.csv, errors.csv, run.json, a heatmap."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for number, path in enumerate(paths):
        row = {"sop_pseudonym": f"sop{number:03d}", "path": path, "study_pseudonym": f"st{number}",
               "series_pseudonym": f"se{number}", "modality": "CR", "view": "PA"}
        probabilities = rng.random(len(CXR14_LABELS))
        row.update({f"prob_{label}": round(float(p), 4) for label, p in zip(CXR14_LABELS, probabilities)})
        row.update({f"call_{label}": int(p >= 0.5) for label, p in zip(CXR14_LABELS, probabilities)})
        row.update({"model": "chexnet_tiny", "checkpoint_sha256": "0" * 64})
        rows.append(row)
    for row, probability in zip(rows, (0.91, 0.12)):
        row["prob_Effusion"], row["call_Effusion"] = probability, int(probability >= 0.5)
    pd.DataFrame(rows).to_csv(folder / "scores.csv", index=False)
    (folder / "errors.csv").write_text("path,outcome,reason,message\nnotes.txt,skipped,not_dicom,not an image\n")
    (folder / "run.json").write_text('{"input_root": "%s"}' % folder.parent.as_posix())
    (folder / "heatmaps").mkdir()
    PILImage.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "heatmaps" / "sop000_Effusion.png")
    return folder


@pytest.fixture()
def make_app(monkeypatch: pytest.MonkeyPatch, app_root: Path, tiny_checkpoint: Path) -> Callable:
    """Build an AppTest of apps/review.py configured through MEDRES_APP_* variables."""
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
