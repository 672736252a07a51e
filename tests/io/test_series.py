"""DICOM series folders: sorting by position, spacing checks, RAS+ affine."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medres.errors import InconsistentGeometryError, MedresError, MixedSeriesError, NonUniformSpacingError
from medres.io import read_image
from medres.synthetic.dicom import write_ct_series

OBLIQUE = [1.0, 0.0, 0.0, 0.0, float(np.cos(0.3)), float(-np.sin(0.3))]
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def volume_hu(n_slices=8, rows=16, cols=12, seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1000, 1500, size=(n_slices, rows, cols)))


def write_series(folder, hounsfield, orientation=OBLIQUE, step=2.5, numbers=None, seed="series-a"):
    return write_ct_series(folder, hounsfield, origin=[-10.0, 20.0, 35.0], orientation=orientation,
                           pixel_spacing=(0.9, 0.7), slice_step=step, series_seed=seed, instance_numbers=numbers)


def independent_canonical(hounsfield, origin, orientation, pixel_spacing, step):
    """The DICOM standard's equation (PS3.3 C.7.6.2.1.1) in LPS, made RAS, canonicalised by nibabel."""
    row_cosine, column_cosine = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_cosine, column_cosine)
    affine = np.eye(4)
    affine[:3, 0] = row_cosine * pixel_spacing[1]  # index i runs along a row (columns)
    affine[:3, 1] = column_cosine * pixel_spacing[0]
    affine[:3, 2] = normal * step
    affine[:3, 3] = origin
    affine = np.diag([-1, -1, 1, 1]) @ affine
    stack = np.transpose(hounsfield, (2, 1, 0)).astype(np.float32)  # (cols, rows, slices)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(stack, affine))
    return np.asarray(canonical.dataobj), canonical.affine


def test_series_matches_independent_geometry(tmp_path):
    hounsfield = volume_hu()
    write_series(tmp_path / "s", hounsfield)
    image = read_image(tmp_path / "s")
    expected_array, expected_affine = independent_canonical(hounsfield, [-10, 20, 35], OBLIQUE, (0.9, 0.7), 2.5)
    np.testing.assert_allclose(image.array[0], expected_array, atol=1e-3)
    np.testing.assert_allclose(image.affine, expected_affine, atol=1e-4)
    assert image.spacing == pytest.approx(tuple(np.linalg.norm(expected_affine[:3, :3], axis=0)), abs=1e-4)
    assert image.meta["n_slices"] == 8 and image.modality == "CT"


def test_shuffled_files_and_scrambled_instance_numbers_give_the_identical_volume(tmp_path):
    hounsfield = volume_hu()
    write_series(tmp_path / "ordered", hounsfield)
    write_series(tmp_path / "scrambled", hounsfield, numbers=[7, 3, 8, 1, 5, 2, 6, 4])
    ordered, scrambled = read_image(tmp_path / "ordered"), read_image(tmp_path / "scrambled")
    np.testing.assert_array_equal(ordered.array, scrambled.array)
    np.testing.assert_array_equal(ordered.affine, scrambled.affine)


def test_a_missing_slice_is_named_as_a_gap(tmp_path):
    paths = write_series(tmp_path / "s", volume_hu())
    paths[4].unlink()
    gap = r"gap of 5\.000 mm between IM0004\.dcm .* and IM0006\.dcm"
    with pytest.raises(NonUniformSpacingError, match=gap) as caught:
        read_image(tmp_path / "s")
    assert caught.value.reason == "non_uniform_spacing"


def test_two_series_in_one_folder_are_refused(tmp_path):
    write_series(tmp_path / "s", volume_hu(4))
    other = write_series(tmp_path / "other", volume_hu(4, seed=1), seed="series-b")
    for path in other:
        shutil.copy(path, tmp_path / "s" / f"B{path.name}")
    with pytest.raises(MixedSeriesError, match="2 series in one folder") as caught:
        read_image(tmp_path / "s")
    assert caught.value.reason == "mixed_series"


def test_duplicated_slice_is_a_mixed_series(tmp_path):
    paths = write_series(tmp_path / "s", volume_hu(4))
    shutil.copy(paths[1], tmp_path / "s" / "copy.dcm")
    with pytest.raises(MixedSeriesError, match="same slice position"):
        read_image(tmp_path / "s")


def test_a_scout_with_another_orientation_is_refused(tmp_path):
    write_series(tmp_path / "s", volume_hu(4))
    scout = write_series(tmp_path / "scout", volume_hu(1), orientation=AXIAL)
    shutil.copy(scout[0], tmp_path / "s" / "scout.dcm")
    with pytest.raises(InconsistentGeometryError, match="oriented differently"):
        read_image(tmp_path / "s")


def test_gantry_tilt_is_refused(tmp_path):
    import pydicom

    paths = write_series(tmp_path / "s", volume_hu(4), orientation=AXIAL)
    for index, path in enumerate(paths):  # shift each slice sideways: a sheared stack
        dataset = pydicom.dcmread(path)
        position = [float(v) for v in dataset.ImagePositionPatient]
        dataset.ImagePositionPatient = [position[0], position[1] + 3.0 * index, position[2]]
        dataset.save_as(path)
    with pytest.raises(InconsistentGeometryError, match="drift"):
        read_image(tmp_path / "s")


def test_sample_series_is_read_with_its_manifest_geometry(sample_data):
    manifest = json.loads((sample_data / "MANIFEST.json").read_text())["ct_series"]
    image = read_image(sample_data / "ct_series")
    assert image.array.shape[0] == 1 and sorted(image.array.shape[1:]) == sorted(
        [manifest["n_slices"], manifest["rows"], manifest["cols"]])
    expected_spacing = sorted([*manifest["pixel_spacing"], manifest["slice_step"]])
    assert sorted(image.spacing) == pytest.approx(expected_spacing, abs=1e-4)
    assert image.array.max() == pytest.approx(700, abs=1)  # the bony strip, in HU


def test_non_dicom_files_in_the_folder_are_ignored(tmp_path):
    write_series(tmp_path / "s", volume_hu(3))
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    (tmp_path / "s" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    assert read_image(tmp_path / "s").array.shape[-1] in (3, 12, 16)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(MedresError, match="no DICOM files"):
        read_image(tmp_path)
