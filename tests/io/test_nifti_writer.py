"""The NIfTI label writer, paired with the reader: labels on the ``Image`` read -> the input's own file layout.

Labels are computed on the RAS+ volume that ``read_image`` returned; nibabel
reads the written file back, and both its affine and its stored voxels are
compared with the source file as nibabel reads it (thresholded the same way),
never with medres's own reorientation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, ornt_transform
from nibabel.testing import data_path

from medres.errors import GeometryMismatchError
from medres.io import Image, read_image, write_labels_nifti

NIBABEL_FILES = ["anatomical.nii", "reoriented_anat_moved.nii", "example_nifti2.nii.gz", "standard.nii.gz",
                 "functional.nii"]


def labels_from(values: np.ndarray) -> np.ndarray:
    """Three labels from an image's first channel: below, around and above its median (any voxel order)."""
    low, high = np.percentile(values, [40, 70])
    return ((values > low).astype(np.uint8) + (values > high).astype(np.uint8)).astype(np.uint8)


def first_channel_as_stored(path: Path) -> np.ndarray:
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    return data if data.ndim == 3 else data[..., 0]


def reoriented_copy(source: Path, target: Path, axis_codes: str) -> Path:
    """The same voxels stored in another axis order (``nibabel.as_reoriented``): the same physical image."""
    image = nib.load(source)
    transform = ornt_transform(axcodes2ornt(nib.aff2axcodes(image.affine)), axcodes2ornt(axis_codes))
    nib.save(image.as_reoriented(transform), target)
    return target


def assert_written_like_source(written_path: Path, source_path: Path) -> None:
    written, source = nib.load(written_path), nib.load(source_path)
    assert np.array_equal(written.affine, source.affine), "the input's affine, bit for bit"
    assert written.shape == source.shape[:3] and written.get_data_dtype() == np.uint8
    for getter in ("get_qform", "get_sform"):
        (written_matrix, written_code), (source_matrix, source_code) = (
            getattr(written.header, getter)(coded=True), getattr(source.header, getter)(coded=True))
        assert written_code == source_code and np.array_equal(written_matrix, source_matrix), getter
    assert written.header.get_intent()[0] == "label" and type(written) is type(source)
    expected = labels_from(first_channel_as_stored(source_path))
    assert np.array_equal(np.asarray(written.dataobj), expected), "voxels in the input's own storage order"


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_labels_go_back_into_the_input_files_layout(name, tmp_path):
    source = Path(data_path) / name
    image = read_image(source)
    written = write_labels_nifti(labels_from(image.array[0]), image, tmp_path / "labels.nii.gz")
    assert_written_like_source(written, source)


@pytest.mark.parametrize("axis_codes", ["LPS", "PSL", "SPR"])
def test_any_storage_order_round_trips(sample_data, tmp_path, axis_codes):
    source = reoriented_copy(sample_data / "volume_oblique.nii.gz", tmp_path / f"{axis_codes}.nii.gz", axis_codes)
    image = read_image(source)
    labels = labels_from(image.array[0])
    written = write_labels_nifti(labels, image, tmp_path / "out" / "labels.nii.gz")
    assert "".join(nib.aff2axcodes(nib.load(written).affine)) == axis_codes
    assert_written_like_source(written, source)
    back = read_image(written)
    assert np.array_equal(back.array[0], labels) and np.array_equal(back.affine, image.affine)


def test_the_writer_never_reopens_the_source(sample_data, tmp_path):
    source = Path(shutil.copy(sample_data / "volume_oblique.nii.gz", tmp_path / "moved_away.nii.gz"))
    reference = nib.load(sample_data / "volume_oblique.nii.gz")
    image = read_image(source)
    source.unlink()
    written = nib.load(write_labels_nifti(labels_from(image.array[0]), image, tmp_path / "labels.nii.gz"))
    assert np.array_equal(written.affine, reference.affine) and written.shape == reference.shape


def test_labels_for_a_dicom_series_are_written_in_ras_with_its_affine(sample_data, tmp_path):
    image = read_image(sample_data / "ct_series")
    labels = labels_from(image.array[0])
    written = nib.load(write_labels_nifti(labels, image, tmp_path / "labels.nii.gz"))
    np.testing.assert_allclose(written.affine, image.affine, atol=1e-4)  # a NIfTI header holds float32
    assert "".join(nib.aff2axcodes(written.affine)) == "RAS" and written.header.get_xyzt_units()[0] == "mm"
    assert np.array_equal(np.asarray(written.dataobj), labels)


def test_the_source_header_stays_out_of_meta(sample_data):
    image = read_image(sample_data / "volume_oblique.nii.gz")
    assert isinstance(image.sources[0], nib.Nifti1Header) and "sources" not in repr(image)
    json.dumps(image.meta)
    assert image == Image(image.array, image.spacing, image.affine, image.meta, image.modality), \
        "sources take no part in equality"


def test_labels_off_the_grid_are_refused(sample_data, tmp_path):
    image = read_image(sample_data / "volume_oblique.nii.gz")
    with pytest.raises(GeometryMismatchError, match="do not lie on the image's grid") as caught:
        write_labels_nifti(np.zeros((3, 3, 3), np.uint8), image, tmp_path / "labels.nii.gz")
    assert caught.value.reason == "geometry_mismatch"
    other_header = nib.load(Path(data_path) / "anatomical.nii").header
    mismatched = Image(image.array, image.spacing, image.affine, image.meta, image.modality, (other_header,))
    with pytest.raises(GeometryMismatchError, match="input's grid"):
        write_labels_nifti(labels_from(image.array[0]), mismatched, tmp_path / "labels.nii.gz")
