"""``medres eval seg`` on predictions with known answers, and ``medres train vol`` end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medres.cli.main import main
from medres.data.phantoms import make_ct_phantoms
from medres.data.volumes import load_volume_dataset
from medres.io import read_image
from medres.metrics import hausdorff95_mm, normalized_surface_dice
from medres.models import load_checkpoint


@pytest.fixture(scope="module")
def two_phantoms(tmp_path_factory) -> Path:
    return make_ct_phantoms(tmp_path_factory.mktemp("eval_phantoms"), 2, seed=3, dicom_cases=0)


def test_eval_seg_reports_known_values(two_phantoms, tmp_path, capsys):
    """Case 0 predicted perfectly; case 1 shifted one voxel along R-L: HD95 = that spacing, NSD 1 at it."""
    perfect, shifted = load_volume_dataset(two_phantoms).training
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    shutil.copy(perfect.label, predictions / f"{perfect.case_id}.nii.gz")
    label = nib.load(shifted.label)
    assert "".join(nib.aff2axcodes(label.affine)) == "LPS"
    moved = np.roll(np.asarray(label.dataobj), 1, axis=0)
    nib.save(nib.Nifti1Image(moved, label.affine), predictions / f"{shifted.case_id}.nii.gz")
    spacing_x = read_image(shifted.label).spacing[0]
    out = tmp_path / "report"
    assert main(["eval", "seg", "--predictions", str(predictions), "--data", str(two_phantoms), "--out", str(out),
                 "--tolerance-mm", str(spacing_x)]) == 0
    assert "mean Dice" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {(row["case"], row["label"]): row for row in metrics["cases"]}
    for name in ("liver", "spleen", "kidneys"):
        assert rows[(perfect.case_id, name)] == {"case": perfect.case_id, "label": name, "dice": 1.0,
                                                 "hd95_mm": 0.0, "nsd": 1.0}
        row = rows[(shifted.case_id, name)]
        assert 0.7 < row["dice"] < 1 and row["hd95_mm"] == pytest.approx(spacing_x) and row["nsd"] == 1.0
    truth = read_image(shifted.label)
    prediction = read_image(predictions / f"{shifted.case_id}.nii.gz")
    liver = rows[(shifted.case_id, "liver")]
    assert liver["hd95_mm"] == hausdorff95_mm(prediction.array[0] == 1, truth.array[0] == 1, truth.spacing)
    assert liver["nsd"] == normalized_surface_dice(prediction.array[0] == 1, truth.array[0] == 1, truth.spacing,
                                                   spacing_x)
    liver_summary = metrics["per_label"]["liver"]
    assert liver_summary["cases"] == 2 and liver_summary["hd95_mm"]["mean"] == pytest.approx(spacing_x / 2)
    report = (out / "report.md").read_text()
    assert "| liver |" in report and "±" in report and perfect.case_id in report


def test_eval_seg_needs_a_prediction_for_every_case(two_phantoms, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", "seg", "--predictions", str(tmp_path / "empty"), "--data", str(two_phantoms),
                 "--out", str(tmp_path / "out")]) == 1
    assert "no prediction for case" in capsys.readouterr().err


def test_train_vol_learns_splenomegaly(tmp_path, capsys):
    data = make_ct_phantoms(tmp_path / "phantoms", 60, seed=31, dicom_cases=0)
    run = tmp_path / "run"
    assert main(["train", "vol", "--data", str(data), "--out", str(run), "--model", "resnet3d_tiny",
                 "--input-size", "64", "48", "32", "--epochs", "10", "--lr", "3e-3", "--val-fraction", "0.3",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    best_auroc = max(float(row["auroc_splenomegaly"]) for row in rows)
    with capsys.disabled():
        print(f"\nresnet3d_tiny splenomegaly: best validation AUROC {best_auroc:.3f} over {len(rows)} epochs "
              f"(18 validation volumes)")
    assert best_auroc >= 0.8
    model = load_checkpoint(run / "best.safetensors")
    assert model.card.task == "vol" and model.card.labels == ("splenomegaly",) and model.card.input_size == (64, 48, 32)
