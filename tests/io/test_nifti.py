"""NIfTI files come out exactly as nibabel.as_closest_canonical gives them."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from medres.errors import MedresError
from medres.io import read_image

NIBABEL_FILES = ["anatomical.nii", "reoriented_anat_moved.nii", "functional.nii",
                 "example4d.nii.gz", "example_nifti2.nii.gz", "standard.nii.gz"]


def canonical_channels_first(path: Path):
    canonical = nib.as_closest_canonical(nib.load(path))
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    return data, canonical.affine


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_nibabel_test_files_equal_as_closest_canonical(name):
    path = Path(data_path) / name
    expected_array, expected_affine = canonical_channels_first(path)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, expected_array)
    np.testing.assert_array_equal(image.affine, expected_affine)
    assert image.is_volume and image.meta["source_format"] == "nifti"
    assert "".join(nib.aff2axcodes(image.affine)) == "RAS"


def test_oblique_sample_volume(sample_data):
    path = sample_data / "volume_oblique.nii.gz"
    expected_array, expected_affine = canonical_channels_first(path)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, expected_array)
    np.testing.assert_allclose(image.affine, expected_affine)
    assert image.meta["original_axis_codes"] != "RAS"


def test_nifti_is_recognised_by_content_not_extension(tmp_path):
    renamed = tmp_path / "scan.data"
    renamed.write_bytes((Path(data_path) / "standard.nii.gz").read_bytes())
    assert read_image(renamed).is_volume


def test_truncated_gzip_nifti_is_refused(tmp_path):
    data = (Path(data_path) / "example4d.nii.gz").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MedresError) as caught:
        read_image(cut)
    assert caught.value.reason in ("truncated", "corrupt")


def test_nifti_over_budget_is_refused_before_loading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(header.binaryblock + b"\0" * 4)
    with pytest.raises(MedresError, match="exceeds the size budget") as caught:
        read_image(path)
    assert caught.value.reason == "too_large"
