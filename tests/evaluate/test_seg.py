"""``medres eval seg`` against MedPy and MONAI themselves (issue 14).

The command runs on CT phantoms; every number it reports for a case and label is then recomputed, from the
prediction and label NIfTIs it read (opened here with nibabel, not with medres's reader), by MedPy's
``hd95`` (the pooled HD95), MONAI's ``compute_hausdorff_distance(percentile=95)`` (the max-directed HD95) and
MONAI's ``compute_surface_dice``. MONAI computes in float32, so its values are compared to float32 precision,
and its surface Dice also through the exact fraction its float32 result rounds (as tests/metrics does).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from medpy.metric.binary import hd95 as medpy_hd95
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from monai.metrics.utils import get_mask_edges

from medres.cli.main import main
from medres.data.volumes import VolumeCase, load_volume_dataset
from medres.evaluate.seg import METRIC_CONVENTIONS, METRIC_HEADINGS
from medres.synthetic.phantoms import make_ct_phantoms

# MONAI's own metric functions call its deprecated get_mask_edges argument; that warning is not medres's.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

MONAI_FLOAT32_RELATIVE = 4e-6
"""MONAI's HD95 is a float32 quantile of float32 distances: within ~12 float32 ulps of the float64 value."""
TOLERANCE_MM = 1.5


def read_canonical_labels(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Integer labels, affine and voxel size (mm) of a label NIfTI in RAS+ voxel order, read by nibabel."""
    image = nib.as_closest_canonical(nib.load(path))
    labels = np.rint(np.asarray(image.dataobj)).astype(np.int32)
    return labels, image.affine, tuple(float(size) for size in image.header.get_zooms()[:3])


def prediction_file(predictions: Path, case_id: str) -> Path:
    """The file ``eval seg --predictions`` reads for a case: ``<case>.nii.gz`` or ``<case>/segmentation.nii.gz``."""
    flat = predictions / f"{case_id}.nii.gz"
    return flat if flat.is_file() else predictions / case_id / "segmentation.nii.gz"


def one_hot(mask: np.ndarray) -> torch.Tensor:
    """MONAI's layout: batch of one, background and foreground channels."""
    return torch.as_tensor(np.stack([~mask, mask])[None].astype(np.float32))


def assert_row_equals_the_tools(row: dict[str, Any], pred: np.ndarray, true: np.ndarray,
                                spacing: tuple[float, ...], tolerance_mm: float) -> None:
    """One metrics.json row against MedPy and MONAI on the same masks; empty masks by the stated conventions."""
    assert row["dice"] == pytest.approx(2 * np.sum(pred & true) / (pred.sum() + true.sum()), abs=1e-12)
    if not pred.any() or not true.any():
        with pytest.raises(RuntimeError):  # MedPy has no value for an empty mask: medres states its own
            medpy_hd95(pred, true, voxelspacing=spacing)
        assert pred.any() != true.any(), "the phantoms have every organ; only one side can be empty here"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monai_hd95 = compute_hausdorff_distance(one_hot(pred), one_hot(true), percentile=95, spacing=spacing)
            monai_nsd = compute_surface_dice(one_hot(pred), one_hot(true), [tolerance_mm], spacing=spacing)
        assert math.isnan(monai_hd95.item()) and monai_nsd.item() == 0.0
        assert row["hd95_mm"] is None and row["hd95_max_directed_mm"] is None and row["nsd"] == 0.0
        return
    assert row["hd95_mm"] == pytest.approx(medpy_hd95(pred, true, voxelspacing=spacing), abs=1e-6, rel=0)
    monai_hd95 = compute_hausdorff_distance(one_hot(pred), one_hot(true), percentile=95, spacing=spacing).item()
    assert row["hd95_max_directed_mm"] == pytest.approx(monai_hd95, abs=1e-6, rel=MONAI_FLOAT32_RELATIVE)
    monai_nsd = compute_surface_dice(one_hot(pred), one_hot(true), [tolerance_mm], spacing=spacing).item()
    surface_voxels = sum(int(edges.sum()) for edges in get_mask_edges(pred, true))
    assert row["nsd"] == pytest.approx(round(monai_nsd * surface_voxels) / surface_voxels, abs=1e-9, rel=0)
    assert row["nsd"] == pytest.approx(monai_nsd, abs=1e-7, rel=0)


def assert_report_equals_the_tools(metrics: dict[str, Any], data: Path, predictions: Path) -> dict[str, list]:
    """Every row of ``metrics.json`` recomputed by MedPy and MONAI; returns MedPy's HD95s per label."""
    dataset = load_volume_dataset(data)
    cases: dict[str, VolumeCase] = {case.case_id: case for case in dataset.training}
    medpy_by_label: dict[str, list] = {name: [] for name in dataset.labels[1:]}
    for row in metrics["cases"]:
        truth, truth_affine, spacing = read_canonical_labels(cases[row["case"]].label)
        predicted, predicted_affine, _ = read_canonical_labels(prediction_file(predictions, row["case"]))
        assert predicted.shape == truth.shape and np.allclose(predicted_affine, truth_affine, atol=1e-3)
        value = dataset.labels.index(row["label"])
        pred, true = predicted == value, truth == value
        assert_row_equals_the_tools(row, pred, true, spacing, metrics["tolerance_mm"])
        if pred.any() and true.any():
            medpy_by_label[row["label"]].append(medpy_hd95(pred, true, voxelspacing=spacing))
    return medpy_by_label


def assert_report_states_the_conventions(out: Path, metrics: dict[str, Any]) -> None:
    report = (out / "report.md").read_text()
    for heading in METRIC_HEADINGS.values():
        assert heading.format(tolerance=metrics["tolerance_mm"]) in report
    assert "## Metric conventions" in report and metrics["conventions"] == METRIC_CONVENTIONS
    conventions = report[report.index("## Metric conventions"):]
    for fact in ("face-connected", "joint bounding box", "`medpy.metric.binary.hd95`",
                 "`compute_hausdorff_distance(percentile=95)`", "`compute_surface_dice`", "`surface-distance`",
                 "Exactly one mask empty", "Both masks empty"):
        assert fact in conventions


@pytest.fixture(scope="module")
def held_out_predictions(trained_checkpoint: Path, phantom_held_out_set: Path, tmp_path_factory) -> Path:
    """``medres segment`` of every held-out phantom (the last a DICOM series): ``<case>/segmentation.nii.gz``."""
    folder = tmp_path_factory.mktemp("held_out_predictions")
    for case in load_volume_dataset(phantom_held_out_set).training:
        assert main(["segment", str(case.images[0]), "--checkpoint", str(trained_checkpoint),
                     "--out", str(folder / case.case_id), "--no-progress"]) == 0
    return folder


@pytest.mark.slow
def test_eval_seg_equals_medpy_and_monai_on_a_trained_models_predictions(
        held_out_predictions: Path, phantom_held_out_set: Path, tmp_path: Path, capsys) -> None:
    """`segment` -> `eval seg --predictions`: every case and label equals MedPy's and MONAI's values."""
    out = tmp_path / "report"
    assert main(["eval", "seg", "--predictions", str(held_out_predictions), "--data", str(phantom_held_out_set),
                 "--out", str(out), "--tolerance-mm", str(TOLERANCE_MM), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tolerance_mm"] == TOLERANCE_MM
    labels = load_volume_dataset(phantom_held_out_set).labels[1:]
    n_cases = len(load_volume_dataset(phantom_held_out_set).training)
    assert sorted((row["case"], row["label"]) for row in metrics["cases"]) == sorted(
        (case, label) for case in metrics["selection"]["case_splits"] for label in labels)
    assert len(metrics["cases"]) == n_cases * len(labels)

    medpy_by_label = assert_report_equals_the_tools(metrics, phantom_held_out_set, held_out_predictions)
    for name, values in metrics["per_label"].items():
        assert values["hd95_infinite"] == values["hd95_max_directed_infinite"] == n_cases - len(medpy_by_label[name])
        if medpy_by_label[name]:
            assert values["hd95_mm"]["mean"] == pytest.approx(np.mean(medpy_by_label[name]), abs=1e-6)
        summary = (f"{name}: Dice {values['dice']['mean']:.4f}, HD95 pooled (MedPy) {values['hd95_mm']['mean']:.2f} "
                   f"mm, HD95 (MONAI) {values['hd95_max_directed_mm']['mean']:.2f} mm, NSD at {TOLERANCE_MM:g} mm "
                   f"{values['nsd']['mean']:.4f}")
        assert summary in printed
    assert_report_states_the_conventions(out, metrics)


@pytest.fixture(scope="module")
def two_phantoms(tmp_path_factory) -> Path:
    return make_ct_phantoms(tmp_path_factory.mktemp("eval_seg_phantoms"), 2, seed=5, dicom_cases=0)


def test_eval_seg_on_an_empty_and_a_shifted_prediction(two_phantoms: Path, tmp_path: Path, capsys) -> None:
    """One case misses the kidneys (HD95 infinite: null, counted, out of the mean), the other is shifted along
    two axes with a stray spleen voxel in a corner; both equal the tools where they have a value."""
    missing, shifted = load_volume_dataset(two_phantoms).training
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    reference = nib.load(missing.label)
    without_kidneys = np.asarray(reference.dataobj).copy()
    without_kidneys[without_kidneys == 3] = 0
    nib.save(nib.Nifti1Image(without_kidneys, reference.affine), predictions / f"{missing.case_id}.nii.gz")
    reference = nib.load(shifted.label)
    moved = np.roll(np.asarray(reference.dataobj), (2, -1), axis=(0, 2))
    moved[0, 0, 0] = 2
    nib.save(nib.Nifti1Image(moved, reference.affine), predictions / f"{shifted.case_id}.nii.gz")
    out = tmp_path / "report"
    assert main(["eval", "seg", "--predictions", str(predictions), "--data", str(two_phantoms), "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {(row["case"], row["label"]): row for row in metrics["cases"]}
    assert rows[(missing.case_id, "kidneys")] == {
        "case": missing.case_id, "split": "unknown", "label": "kidneys", "dice": 0.0, "hd95_mm": None,
        "hd95_max_directed_mm": None, "nsd": 0.0}
    assert_report_equals_the_tools(metrics, two_phantoms, predictions)
    kidneys = metrics["per_label"]["kidneys"]
    assert kidneys["hd95_infinite"] == kidneys["hd95_max_directed_infinite"] == 1
    assert kidneys["hd95_mm"] == {"mean": rows[(shifted.case_id, "kidneys")]["hd95_mm"], "sd": 0.0}
    assert "kidneys: " in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert f"| {missing.case_id} | unknown | kidneys | 0.0000 | inf | inf | 0.0000 |" in report
    assert "| kidneys |" in report and "| 2 | 1 / 1 |" in report
    assert_report_states_the_conventions(out, metrics)

