"""The volume view on what the real commands write: `train seg` -> `segment` -> the app shows the run's names.

The training data's ``dataset.json`` names the organs in Latin (hepar, lien,
renes), names no other file here uses: when the app's legend shows them, they
came from the trained run (its card, or the ``volumes.json`` that `segment`
wrote from it), not from a guess or a default.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medres.app import views
from medres.cli.main import main
from medres.synthetic.phantoms import make_ct_phantoms
from tests.app.conftest import APP_SCRIPT, APP_TIMEOUT_S

RUN_LABELS = ("background", "hepar", "lien", "renes")
"""The phantoms' liver, spleen and kidneys, renamed in the training set's dataset.json."""
SHORT_TRAINING = ["--model", "resunet3d_tiny", "--patch", "48", "48", "32", "--epochs", "2", "--patches-per-epoch",
                  "16", "--lr", "3e-3", "--patience", "100", "--seed", "0", "--no-progress"]
"""About a CPU minute: enough for the tiny model to label some voxels of each organ; quality is not under test."""
IMAGE = "ct/abdomen.nii.gz"
SEGMENTATION = "segmented/segmentation.nii.gz"


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`medres train seg` on renamed phantoms, then `medres segment` of a held-out phantom into the app's root."""
    work = tmp_path_factory.mktemp("seg_journey")
    training = make_ct_phantoms(work / "train", 6, seed=11, dicom_cases=0)
    description = json.loads((training / "dataset.json").read_text())
    description["labels"] = {str(value): name for value, name in enumerate(RUN_LABELS)}
    (training / "dataset.json").write_text(json.dumps(description))
    assert main(["train", "seg", "--data", str(training), "--out", str(work / "run"), *SHORT_TRAINING]) == 0
    held_out = make_ct_phantoms(work / "held_out", 1, seed=23, dicom_cases=0)
    root = work / "root"
    (root / "ct").mkdir(parents=True)
    case = next((held_out / "imagesTr").iterdir())
    shutil.copy(case, root / IMAGE)
    shutil.copy(held_out / "labelsTr" / case.name, root / "ct" / "reference_labels.nii.gz")
    checkpoint = work / "run" / "best.safetensors"
    assert main(["segment", str(root / IMAGE), "--checkpoint", str(checkpoint), "--out", str(root / "segmented"),
                 "--no-progress"]) == 0
    return {"root": root, "checkpoint": checkpoint}


def build_app(monkeypatch: pytest.MonkeyPatch, root: Path, seg_checkpoint: Path | None = None):
    """An AppTest of the review app on ``root`` (no classifier: the volume view needs none)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDRES_APP_ROOT", str(root))
    monkeypatch.delenv("MEDRES_APP_CHECKPOINT", raising=False)
    if seg_checkpoint is None:
        monkeypatch.delenv("MEDRES_APP_SEG_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("MEDRES_APP_SEG_CHECKPOINT", str(seg_checkpoint))
    return AppTest.from_file(str(APP_SCRIPT), default_timeout=APP_TIMEOUT_S)


def open_volume(app, relative: str):
    app.run()
    app.text_input(key="browse_path").set_value(relative)
    return app.button(key="browse_open_path").click().run()


def shown_names(app) -> list[str]:
    """The names in the label-volume table under the three planes."""
    return list(app.dataframe[0].value["name"])


def test_segment_output_is_shown_with_the_runs_label_names(journey: dict[str, Path], monkeypatch) -> None:
    app = open_volume(build_app(monkeypatch, journey["root"]), IMAGE)
    assert not app.exception and not app.error
    app.radio(key="seg_source").set_value("Label file under the root").run()
    app.text_input(key="seg_path").set_value(SEGMENTATION).run()
    assert not app.exception and not app.error
    names = shown_names(app)
    assert names and set(names) <= set(RUN_LABELS[1:]), names
    legend = next(markdown.value for markdown in app.markdown if names[0] in markdown.value)
    assert "label 1" not in legend and "label 2" not in legend
    assert any(caption.value == "Label names from: volumes.json written by `medres segment`"
               for caption in app.caption)
    written = json.loads((journey["root"] / "segmented" / "volumes.json").read_text())["label_volumes_ml"]
    table = app.dataframe[0].value
    for name, millilitres in zip(table["name"], table["volume_ml"]):
        assert millilitres == pytest.approx(written[name], abs=0.01), "the app and `segment` measure alike"


def test_running_the_runs_checkpoint_in_the_app_names_labels_from_its_card(journey: dict[str, Path],
                                                                           monkeypatch) -> None:
    app = open_volume(build_app(monkeypatch, journey["root"], journey["checkpoint"]), IMAGE)
    app.radio(key="seg_source").set_value("Run the segmentation model").run()
    app.button(key="seg_run").click().run()
    assert not app.exception and not app.error
    assert set(shown_names(app)) <= set(RUN_LABELS[1:]) and shown_names(app)
    assert any(caption.value == "Label names from: the segmentation model's card" for caption in app.caption)
    in_app, _names = app.session_state["computed"][("segmentation",)]
    written = nib.as_closest_canonical(nib.load(str(journey["root"] / SEGMENTATION)))  # RAS+, as the app holds it
    assert np.mean(in_app == np.asarray(written.dataobj)) > 0.99, "the app and `segment` label the same voxels"


def test_the_side_marked_r_is_the_patients_right(journey: dict[str, Path], monkeypatch) -> None:
    """The phantom's liver lies on the patient's right: in the axial plane it must be on the side marked R."""
    app = open_volume(build_app(monkeypatch, journey["root"]), IMAGE)
    app.radio(key="seg_source").set_value("Label file under the root").run()
    app.text_input(key="seg_path").set_value("ct/reference_labels.nii.gz").run()
    assert not app.exception and not app.error
    labels, _names = app.session_state["computed"][("label_file", "ct/reference_labels.nii.gz")]
    middle = labels.shape[2] // 2
    axial = views.volume_slice(labels, "axial", middle)
    liver_columns = np.nonzero(axial == 1)[1]
    spleen_columns = np.nonzero(axial == 2)[1]
    assert views.ORIENTATION_LETTERS["axial"][2] == "R", "R is written at the left edge of the axial plane"
    assert liver_columns.mean() < axial.shape[1] / 2 < spleen_columns.mean()


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_displayed_planes_carry_direction_letters_and_physical_aspect(plane: str) -> None:
    spacing = (0.8, 0.8, 5.0)  # thick slices: an unscaled coronal plane would be 6x too flat
    volume = np.zeros((40, 40, 12), np.uint8)
    section = views.volume_slice(volume, plane, 0)
    shown = views.display_slice(section, spacing, plane)
    row_mm, column_mm = views.slice_spacing(spacing, plane)
    expected_ratio = section.shape[0] * row_mm / (section.shape[1] * column_mm)
    assert shown.shape[0] / shown.shape[1] == pytest.approx(expected_ratio, rel=0.03)
    assert max(shown.shape[:2]) >= views.MIN_SLICE_SIDE
    red, green, blue = (shown[..., channel].astype(int) for channel in range(3))
    lettered = (red > 150) & (green > 120) & (blue < 90)  # yellow, with the letters' anti-aliased edges
    height, width = lettered.shape
    band = max(height, width) // 8
    middle_rows, middle_columns = slice(height // 3, 2 * height // 3), slice(width // 3, 2 * width // 3)
    edges = {"top": lettered[:band, middle_columns], "bottom": lettered[-band:, middle_columns],
             "left": lettered[middle_rows, :band], "right": lettered[middle_rows, -band:]}
    assert all(edge.sum() > 5 for edge in edges.values()), {name: int(edge.sum()) for name, edge in edges.items()}
    assert lettered.sum() == sum(int(edge.sum()) for edge in edges.values()), "letters only at the four edges"
