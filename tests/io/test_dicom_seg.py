"""The DICOM SEG writer, paired with the series reader: it writes from the headers the ``Image`` kept.

Labels are computed on the RAS+ volume; the check reads every source slice
with pydicom on its own (its HU through pydicom's Modality LUT), thresholds it
the same way, and compares with the SEG frame that references that slice's
SOP Instance UID (through highdicom's reader). The written file is validated
by dciodvfy (Debian's dicom3tools) where it is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from medres.errors import GeometryMismatchError, UsageError
from medres.io import Image, read_image
from medres.io.dicom_seg import write_dicom_seg
from medres.synthetic.dicom import write_ct_series

LABEL_NAMES = ("background", "liver", "lesion of interest")
THRESHOLDS_HU = (0.0, 600.0)
OBLIQUE = [1.0, 0.0, 0.0, 0.0, float(np.cos(0.3)), float(-np.sin(0.3))]


def labels_from_hu(hounsfield: np.ndarray) -> np.ndarray:
    """Label 1 above 0 HU, label 2 above 600 HU: the same rule on the volume and on each slice."""
    return sum((hounsfield > threshold).astype(np.uint8) for threshold in THRESHOLDS_HU).astype(np.uint8)


def oblique_series(folder: Path) -> Path:
    """An oblique CT series with a few structures, files named against their slice order."""
    rng = np.random.default_rng(3)
    hounsfield = np.round(rng.uniform(-1000, 1200, size=(7, 18, 14)))
    write_ct_series(folder, hounsfield, origin=[-10.0, 20.0, 35.0], orientation=OBLIQUE, pixel_spacing=(0.9, 0.7),
                    slice_step=2.5, series_seed="seg-writer", instance_numbers=[5, 2, 7, 1, 3, 6, 4])
    return folder


def source_slices(folder: Path) -> dict[str, pydicom.Dataset]:
    return {str(dataset.SOPInstanceUID): dataset for dataset in map(pydicom.dcmread, sorted(folder.iterdir()))}


def write_seg(image: Image, out: Path) -> Path:
    return write_dicom_seg(labels_from_hu(image.array[0]), image, out, label_names=LABEL_NAMES,
                           algorithm_name="resunet3d_tiny")


@pytest.fixture(params=["oblique", "sample"])
def series(request, tmp_path, sample_data) -> Path:
    return oblique_series(tmp_path / "series") if request.param == "oblique" else sample_data / "ct_series"


def test_each_frame_references_its_source_slice_and_holds_its_labels(series, tmp_path):
    image = read_image(series)
    seg = hd.seg.segread(write_seg(image, tmp_path / "seg.dcm"))
    sources = source_slices(series)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == image.meta["series_instance_uid"]
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == set(sources)
    assert seg.StudyInstanceUID == next(iter(sources.values())).StudyInstanceUID
    uids = sorted(sources)
    frames = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
    for uid, frame in zip(uids, frames):
        expected = labels_from_hu(apply_modality_lut(sources[uid].pixel_array, sources[uid]))
        for number in (1, 2):
            assert np.array_equal(frame[..., number - 1], expected == number), f"segment {number} on {uid}"
    assert [seg.get_segment_description(number).segment_label for number in (1, 2)] == list(LABEL_NAMES[1:])


def test_the_writer_never_reopens_the_source(tmp_path):
    image = read_image(oblique_series(tmp_path / "series"))
    shutil.rmtree(tmp_path / "series")
    seg = hd.seg.segread(write_seg(image, tmp_path / "out" / "seg.dcm"))
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 7


def test_dciodvfy_finds_no_error(series, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy is not installed (Debian: apt-get install dicom3tools)")
    written = write_seg(read_image(series), tmp_path / "seg.dcm")
    result = subprocess.run([dciodvfy, str(written)], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "Segmentation" in report, report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report


def test_the_headers_are_kept_without_pixels_and_out_of_meta(tmp_path):
    image = read_image(oblique_series(tmp_path / "series"))
    assert len(image.sources) == 7 and all(isinstance(source, pydicom.Dataset) for source in image.sources)
    assert not any("PixelData" in source for source in image.sources)
    assert "PatientName" not in json.dumps(image.meta) and "sources" not in repr(image)
    before = [len(source) for source in image.sources]
    write_seg(image, tmp_path / "seg.dcm")
    assert [len(source) for source in image.sources] == before, "the writer works on copies"


def test_an_image_without_dicom_slices_is_refused(sample_data, tmp_path):
    image = read_image(sample_data / "volume_oblique.nii.gz")
    with pytest.raises(UsageError, match="DICOM series folder"):
        write_seg(image, tmp_path / "seg.dcm")


def test_labels_off_the_series_grid_are_refused(tmp_path):
    image = read_image(oblique_series(tmp_path / "series"))
    shifted = image.affine.copy()
    shifted[:3, 3] += 0.3 * image.affine[:3, 0]  # a third of a voxel along the first axis
    moved = Image(image.array, image.spacing, shifted, image.meta, image.modality, image.sources)
    with pytest.raises(GeometryMismatchError, match="do not lie on the segmented volume's grid"):
        write_seg(moved, tmp_path / "seg.dcm")
