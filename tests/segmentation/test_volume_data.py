"""Volume data sets (MSD, nnU-Net), phantoms, preprocessing and its cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medres.data.volume_cache import PreprocessedCases, compute_fingerprint
from medres.data.volumes import label_volume, load_volume_dataset, read_case, read_volume_labels
from medres.errors import DatasetLayoutError, GeometryMismatchError, UnknownLabelError
from medres.models import create_model
from medres.synthetic.phantoms import PHANTOM_LABELS, make_ct_phantoms
from medres.transforms.volume import (
    normalize_intensities,
    prepare_label,
    resample_onto_grid,
    resample_to_spacing,
)


@pytest.fixture(scope="module")
def small_phantoms(tmp_path_factory) -> Path:
    return make_ct_phantoms(tmp_path_factory.mktemp("phantoms"), 7, seed=5)


def test_msd_layout_lists_every_case_with_dicom_folder(small_phantoms):
    dataset = load_volume_dataset(small_phantoms)
    assert dataset.layout == "msd" and dataset.labels == PHANTOM_LABELS and dataset.modality == "CT"
    assert len(dataset.training) == 7 and dataset.training[-1].images[0].is_dir()


def test_phantoms_cover_orientations_and_agree_with_their_labels(small_phantoms):
    dataset = load_volume_dataset(small_phantoms)
    codes = set()
    for case in dataset.training:
        image, label = read_case(case)
        codes.add(image.meta.get("original_axis_codes", "dicom"))
        labels = label_volume(label, case.case_id, len(PHANTOM_LABELS))
        assert set(np.unique(labels)) == {0, 1, 2, 3}, case.case_id
        liver_hu = float(np.median(image.array[0][labels == 1]))
        assert abs(liver_hu - 60) < 5, "the liver is ~60 HU in every storage order"
        assert 2.9 < min(image.spacing) and max(image.spacing) < 5.1
    assert {"RAS", "LPS", "PSL", "RAI", "dicom"} <= codes


def test_volume_labels_csv(small_phantoms):
    names, targets = read_volume_labels(small_phantoms / "volume_labels.csv")
    assert names == ("splenomegaly",) and len(targets) == 7
    assert sorted(float(v[0]) for v in targets.values()) == [0, 0, 0, 0, 1, 1, 1]


def nnunet_copy(source: Path, target: Path) -> Path:
    """The phantoms rearranged as an nnU-Net raw folder (channel suffix, v2 dataset.json)."""
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    for case in load_volume_dataset(source).training:
        image = case.images[0]
        if image.is_dir():
            shutil.copytree(image, target / "imagesTr" / f"{case.case_id}_0000")
        else:
            shutil.copy(image, target / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        shutil.copy(case.label, target / "labelsTr" / f"{case.case_id}.nii.gz")
    description = {"channel_names": {"0": "CT"}, "labels": {name: i for i, name in enumerate(PHANTOM_LABELS)},
                   "numTraining": 7, "file_ending": ".nii.gz"}
    (target / "dataset.json").write_text(json.dumps(description))
    return target


def test_nnunet_layout_gives_the_same_cases(small_phantoms, tmp_path):
    dataset = load_volume_dataset(nnunet_copy(small_phantoms, tmp_path / "nnunet"))
    msd = load_volume_dataset(small_phantoms)
    assert dataset.layout == "nnunet" and dataset.labels == msd.labels
    assert [case.case_id for case in dataset.training] == [case.case_id for case in msd.training]


def test_label_on_another_grid_is_refused_naming_the_case(small_phantoms, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(small_phantoms, root)
    case = load_volume_dataset(root).training[0]
    label = nib.load(case.label)
    shifted = label.affine.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), shifted), case.label)
    with pytest.raises(GeometryMismatchError, match=f"case {case.case_id}: the label's affine differs"):
        read_case(case)
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:-1], label.affine), case.label)
    with pytest.raises(GeometryMismatchError, match=f"case {case.case_id}: the label is"):
        read_case(case)


def test_missing_dataset_json_and_bad_labels(tmp_path, small_phantoms):
    with pytest.raises(DatasetLayoutError, match="no dataset.json"):
        load_volume_dataset(tmp_path)
    image, label = read_case(load_volume_dataset(small_phantoms).training[0])
    with pytest.raises(UnknownLabelError, match="0..1"):
        label_volume(label, "x", 2)


def test_resampling_round_trip_is_exact_for_labels(small_phantoms):
    image, label = read_case(load_volume_dataset(small_phantoms).training[3])
    labels = label_volume(label, "x", 4)
    same, affine = resample_to_spacing(labels[None].astype(np.float32), label.affine, label.spacing, "nearest")
    assert np.array_equal(same[0], labels) and np.array_equal(affine, label.affine)
    half = tuple(step / 2 for step in label.spacing)
    fine, fine_affine = resample_to_spacing(labels[None].astype(np.float32), label.affine, half, "nearest")
    assert fine.shape[1:] == tuple(2 * n - 1 for n in labels.shape)
    back = resample_onto_grid(fine, fine_affine, label.affine, labels.shape, mode="nearest")
    assert np.array_equal(back[0].numpy(), labels)
    assert prepare_label(labels, label.affine, half).dtype == np.uint8


def test_fingerprint_normalisation_and_cache_reuse(small_phantoms, tmp_path):
    dataset = load_volume_dataset(small_phantoms)
    fingerprint = compute_fingerprint(dataset, dataset.training, tmp_path, progress=False)
    ct = fingerprint.normalization["channels"][0]
    assert ct["kind"] == "ct_clip_zscore" and 40 < ct["mean"] < 110 and ct["clip_low"] < 45 < 150 < ct["clip_high"]
    assert compute_fingerprint(dataset, dataset.training, tmp_path, progress=False) == fingerprint
    card = create_model("resunet3d_tiny", labels=dataset.labels, spacing=fingerprint.median_spacing,
                        normalization=fingerprint.normalization).card
    store = PreprocessedCases(tmp_path, card, dataset.training[:2]).ensure(4, progress=False)
    written = {path: path.stat().st_mtime_ns for path in store.folder.iterdir()}
    PreprocessedCases(tmp_path, card, dataset.training[:2]).ensure(4, progress=False)
    assert {path: path.stat().st_mtime_ns for path in store.folder.iterdir()} == written, "nothing recomputed"
    image = store.image(dataset.training[0].case_id)
    assert image.dtype == np.float32 and abs(float(np.mean(image[0][store.label(dataset.training[0].case_id) > 0]))) < 1
    coarser = create_model("resunet3d_tiny", labels=dataset.labels, spacing=(4.0, 4.0, 5.0),
                           normalization=fingerprint.normalization).card
    assert PreprocessedCases(tmp_path, coarser, dataset.training[:2]).folder != store.folder


def test_mr_channels_are_zscored_per_image():
    array = np.random.default_rng(0).normal(300, 50, (1, 8, 8, 8)).astype(np.float32)
    normalized = normalize_intensities(array, {"kind": "per_channel", "channels": [{"kind": "zscore_per_image"}]})
    assert abs(normalized.mean()) < 1e-5 and abs(normalized.std() - 1) < 1e-4
