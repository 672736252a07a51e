"""``medres eval seg`` on predictions with known answers and on a trained run's held-out cases, and
``medres train vol`` end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medres.cli.main import main
from medres.data.volumes import VolumeCase, load_volume_dataset
from medres.errors import UsageError
from medres.evaluate.seg import RESEARCH_NOTICE, RunSplit, select_cases
from medres.io import read_image
from medres.metrics import hausdorff95_max_directed_mm, hausdorff95_mm, normalized_surface_dice
from medres.models import load_checkpoint
from medres.synthetic.phantoms import make_ct_phantoms


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
    printed = capsys.readouterr().out
    assert "mean Dice" in printed and "No training split found" in printed and "SYNTHETIC DATA" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"]["mode"] == "all" and metrics["selection"]["split_file"] is None
    rows = {(row["case"], row["label"]): row for row in metrics["cases"]}
    for name in ("liver", "spleen", "kidneys"):
        assert rows[(perfect.case_id, name)] == {"case": perfect.case_id, "split": "unknown", "label": name,
                                                 "dice": 1.0, "hd95_mm": 0.0, "hd95_max_directed_mm": 0.0,
                                                 "nsd": 1.0}
        row = rows[(shifted.case_id, name)]
        assert 0.7 < row["dice"] < 1 and row["nsd"] == 1.0
        assert row["hd95_mm"] == pytest.approx(spacing_x) == row["hd95_max_directed_mm"]
    truth = read_image(shifted.label)
    prediction = read_image(predictions / f"{shifted.case_id}.nii.gz")
    liver = rows[(shifted.case_id, "liver")]
    assert liver["hd95_mm"] == hausdorff95_mm(prediction.array[0] == 1, truth.array[0] == 1, truth.spacing)
    assert liver["hd95_max_directed_mm"] == hausdorff95_max_directed_mm(prediction.array[0] == 1,
                                                                        truth.array[0] == 1, truth.spacing)
    assert liver["nsd"] == normalized_surface_dice(prediction.array[0] == 1, truth.array[0] == 1, truth.spacing,
                                                   spacing_x)
    liver_summary = metrics["per_label"]["liver"]
    assert liver_summary["cases"] == 2 and liver_summary["hd95_mm"]["mean"] == pytest.approx(spacing_x / 2)
    assert liver_summary["hd95_max_directed_mm"]["mean"] == pytest.approx(spacing_x / 2)
    assert liver_summary["hd95_infinite"] == liver_summary["hd95_max_directed_infinite"] == 0
    assert "HD95 pooled (MedPy)" in printed and "HD95 (MONAI)" in printed
    report = (out / "report.md").read_text()
    assert "| liver |" in report and "±" in report and f"| {perfect.case_id} | unknown | liver |" in report
    assert "HD95 pooled (MedPy `hd95`), mm" in report and "## Metric conventions" in report
    assert RESEARCH_NOTICE in report and "SYNTHETIC DATA" in report and "No training split found" in report


def test_held_out_selection_needs_a_split_and_at_least_one_held_out_case(tmp_path) -> None:
    cases = [VolumeCase(f"case_{number}", (tmp_path / f"case_{number}.nii.gz",)) for number in range(3)]
    everything_trained = RunSplit(tmp_path / "split.json", frozenset(case.case_id for case in cases), frozenset())
    with pytest.raises(UsageError, match="all 3 labelled cases were used in training"):
        select_cases(cases, everything_trained, None)
    with pytest.raises(UsageError, match="needs the training run's split"):
        select_cases(cases, RunSplit(), "held-out")
    assert [name for _, name in select_cases(cases, RunSplit(), None).cases] == ["unknown"] * 3
    split = RunSplit(tmp_path / "split.json", frozenset({"case_0"}), frozenset({"case_1"}))
    assert [(case.case_id, name) for case, name in select_cases(cases, split, None).cases] == [
        ("case_1", "val"), ("case_2", "unseen")]
    assert [name for _, name in select_cases(cases, split, "all").cases] == ["train", "val", "unseen"]


def eval_seg(checkpoint: Path, data: Path, out: Path, *options: str) -> tuple[dict, str]:
    assert main(["eval", "seg", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                 "--no-progress", *options]) == 0
    return json.loads((out / "metrics.json").read_text()), (out / "report.md").read_text()


@pytest.mark.slow
def test_eval_seg_scores_the_runs_held_out_cases_by_default(trained_seg_run, phantom_training_set, tmp_path,
                                                            capsys) -> None:
    """`train seg` -> `eval seg`: the run's val cases only; `--cases all` adds its training cases, tagged."""
    split = json.loads((trained_seg_run / "split.json").read_text())
    checkpoint = trained_seg_run / "best.safetensors"
    metrics, report = eval_seg(checkpoint, phantom_training_set, tmp_path / "held_out")
    printed = capsys.readouterr()
    assert "Held-out cases only" in printed.out and "evaluating" not in printed.err  # --no-progress
    assert metrics["selection"]["mode"] == "held-out"
    assert metrics["selection"]["case_splits"] == {case: "val" for case in split["val"]}
    assert {row["case"] for row in metrics["cases"]} == set(split["val"])
    assert all(f"| {case} | val |" in report for case in split["val"])
    assert not any(case in report for case in split["train"])
    assert RESEARCH_NOTICE in report and "SYNTHETIC DATA" in report and "README_SYNTHETIC.txt" in report

    metrics, report = eval_seg(checkpoint, phantom_training_set, tmp_path / "all", "--cases", "all")
    assert metrics["selection"]["mode"] == "all" and metrics["selection"]["n_evaluated"] == len(
        split["train"]) + len(split["val"])
    assert metrics["selection"]["case_splits"] == {**{case: "train" for case in split["train"]},
                                                   **{case: "val" for case in split["val"]}}
    assert all(f"| {case} | train |" in report for case in split["train"]) and "optimistic" in report


@pytest.mark.slow
def test_eval_seg_on_other_cases_and_without_a_split(trained_seg_run, phantom_held_out_set, tmp_path,
                                                     capsys) -> None:
    """Cases the split does not list are held out; a checkpoint without its split.json evaluates all and says so."""
    held_out_ids = [case.case_id for case in load_volume_dataset(phantom_held_out_set).training]
    metrics, report = eval_seg(trained_seg_run / "best.safetensors", phantom_held_out_set, tmp_path / "unseen")
    assert metrics["selection"]["case_splits"] == {case: "unseen" for case in held_out_ids}
    lonely = Path(shutil.copy(trained_seg_run / "best.safetensors", tmp_path / "best.safetensors"))
    capsys.readouterr()
    metrics, report = eval_seg(lonely, phantom_held_out_set, tmp_path / "no_split")
    assert "No training split found" in capsys.readouterr().out and "No training split found" in report
    assert metrics["selection"]["case_splits"] == {case: "unknown" for case in held_out_ids}
    assert main(["eval", "seg", "--checkpoint", str(lonely), "--data", str(phantom_held_out_set), "--out",
                 str(tmp_path / "refused"), "--cases", "held-out", "--no-progress"]) != 0
    assert "needs the training run's split" in capsys.readouterr().err


def test_eval_seg_needs_a_prediction_for_every_case(two_phantoms, tmp_path, capsys):
    first, second = load_volume_dataset(two_phantoms).training
    (tmp_path / "predictions").mkdir()
    shutil.copy(first.label, tmp_path / "predictions" / f"{first.case_id}.nii.gz")
    assert main(["eval", "seg", "--predictions", str(tmp_path / "predictions"), "--data", str(two_phantoms),
                 "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "no prediction for case" in error and second.case_id in error


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
