"""The segmentation journey through the CLI: train, evaluate on held-out phantoms, segment NIfTI and DICOM.

Everything here uses the one ``resunet3d_tiny`` trained per session (see conftest.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform

from medres.cli.main import main
from medres.data.volumes import load_volume_dataset
from medres.io import read_image
from medres.io.geometry import LPS_TO_RAS
from medres.models import read_card
from medres.synthetic.phantoms import PHANTOM_LABELS

MINIMUM_HELD_OUT_DICE = 0.85


@pytest.mark.slow
def test_trained_model_segments_held_out_phantoms(trained_checkpoint, phantom_held_out_set, tmp_path, capsys):
    assert main(["eval", "seg", "--checkpoint", str(trained_checkpoint), "--data", str(phantom_held_out_set),
                 "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    per_label = {name: round(values["dice"]["mean"], 3) for name, values in metrics["per_label"].items()}
    with capsys.disabled():
        print(f"\nheld-out mean Dice {metrics['mean_dice']:.3f} per label {per_label}")
    assert metrics["mean_dice"] >= MINIMUM_HELD_OUT_DICE
    assert len(metrics["cases"]) == 4 * 3 and (tmp_path / "report.md").read_text().count("phantom_023") == 12


@pytest.mark.slow
def test_card_records_the_preprocessing(trained_checkpoint):
    card = read_card(trained_checkpoint)
    assert card.labels == PHANTOM_LABELS and card.input_size == (48, 48, 32)
    assert 3.0 < card.spacing[0] < 3.7 and 4.0 < card.spacing[2] < 5.0, "median spacing of the phantoms"
    assert card.normalization["channels"][0]["kind"] == "ct_clip_zscore" and card.mirror_axes == ()
    assert card.training_data_fingerprint


def segment_cli(source: Path, checkpoint: Path, out: Path, *extra: str) -> Path:
    assert main(["segment", str(source), "--checkpoint", str(checkpoint), "--out", str(out), *extra]) == 0
    return out


def centroid_lps(mask_indices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return (affine @ np.append(mask_indices.mean(axis=0), 1.0))[:3]


@pytest.mark.slow
def test_dicom_seg_round_trip_puts_each_segment_where_the_truth_is(trained_checkpoint, phantom_held_out_set,
                                                                   tmp_path, capsys):
    case = load_volume_dataset(phantom_held_out_set).training[-1]
    assert case.images[0].is_dir(), "the last held-out phantom is a DICOM series"
    out = segment_cli(case.images[0], trained_checkpoint, tmp_path, "--dicom-seg")
    segmentation = hd.seg.segread(out / "segmentation.dcm")
    source_uid = read_image(case.images[0]).meta["series_instance_uid"]
    assert segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    volume = segmentation.get_volume(combine_segments=False)
    truth = read_image(case.label)
    voxel_mm = min(truth.spacing)
    distances = {}
    for number, name in enumerate(PHANTOM_LABELS[1:], start=1):
        assert segmentation.get_segment_description(number).segment_label == name
        predicted = centroid_lps(np.argwhere(volume.array[..., number - 1] > 0), volume.affine)
        expected = LPS_TO_RAS[:3, :3] @ centroid_lps(np.argwhere(truth.array[0] == number), truth.affine)
        distances[name] = round(float(np.linalg.norm(predicted - expected)), 2)
    with capsys.disabled():
        print(f"\nDICOM SEG centroid error (mm, voxel {truth.spacing[0]:.2f}x{truth.spacing[1]:.2f}x"
              f"{truth.spacing[2]:.2f}): {distances}")
    assert max(distances.values()) < voxel_mm, "within one (smallest) voxel of the truth, in patient mm"


@pytest.mark.slow
def test_nifti_output_keeps_the_input_affine_exactly(trained_checkpoint, phantom_held_out_set, tmp_path):
    for case in load_volume_dataset(phantom_held_out_set).training[:3]:  # RAS, LPS and PSL storage
        out = segment_cli(case.images[0], trained_checkpoint, tmp_path / case.case_id)
        written, source = nib.load(out / "segmentation.nii.gz"), nib.load(case.images[0])
        assert np.array_equal(written.affine, source.affine) and written.shape == source.shape
        truth = np.asarray(nib.load(case.label).dataobj)
        agreement = np.mean(np.asarray(written.dataobj) == truth)
        assert agreement > 0.97, "same voxel order as the input, so the stored truth overlays it directly"


def reoriented_copy(source: Path, target: Path, axis_codes: str) -> Path:
    """The same voxels stored in another axis order (``nibabel.as_reoriented``): same physical image."""
    image = nib.load(source)
    transform = ornt_transform(axcodes2ornt(nib.aff2axcodes(image.affine)), axcodes2ornt(axis_codes))
    nib.save(image.as_reoriented(transform), target)
    return target


@pytest.mark.slow
def test_flipped_or_lps_storage_gives_the_same_physical_segmentation(trained_checkpoint, phantom_held_out_set,
                                                                     tmp_path):
    source = load_volume_dataset(phantom_held_out_set).training[0].images[0]
    results = {}
    for codes in ("RAS", "LPS", "LAI", "SPR"):
        stored = reoriented_copy(source, tmp_path / f"{codes}.nii.gz", codes)
        out = segment_cli(stored, trained_checkpoint, tmp_path / f"out_{codes}", "--sw-batch-size", "2")
        assert "".join(nib.aff2axcodes(nib.load(out / "segmentation.nii.gz").affine)) == codes
        results[codes] = read_image(out / "segmentation.nii.gz")  # back in RAS+ for comparison
    for codes, labels in results.items():
        np.testing.assert_allclose(labels.affine, results["RAS"].affine, atol=1e-4)  # float32 headers
        assert np.array_equal(labels.array, results["RAS"].array), f"{codes} storage changed the segmentation"


@pytest.mark.slow
def test_resuming_a_finished_run_trains_no_further(trained_seg_run, capsys):
    before = (trained_seg_run / "metrics.csv").read_text()
    assert main(["train", "seg", "--resume", str(trained_seg_run)]) == 0
    assert (trained_seg_run / "metrics.csv").read_text() == before
    assert json.loads((trained_seg_run / "split.json").read_text())["val"]


@pytest.mark.slow
def test_training_decays_the_learning_rate_to_zero_as_nnunet_does(trained_seg_run):
    assert json.loads((trained_seg_run / "config.json").read_text())["loop"]["lr_schedule"] == "poly"
    with open(trained_seg_run / "metrics.csv") as stream:
        rates = [float(row["lr"]) for row in csv.DictReader(stream)]
    assert rates == pytest.approx([2e-3 * (1 - epoch / len(rates)) ** 0.9 for epoch in range(len(rates))])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precisions_agree(trained_checkpoint, phantom_held_out_set, tmp_path, precision):
    source = load_volume_dataset(phantom_held_out_set).training[1].images[0]
    out = segment_cli(source, trained_checkpoint, tmp_path, "--precision", precision)
    truth = np.asarray(nib.load(load_volume_dataset(phantom_held_out_set).training[1].label).dataobj)
    assert np.mean(np.asarray(nib.load(out / "segmentation.nii.gz").dataobj) == truth) > 0.97
