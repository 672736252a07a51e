"""The chest X-ray scope gate on real files: one decision for `medres score`'s headers and the app's images."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from medres.errors import MedresError, NoPixelDataError, OutOfScopeError
from medres.io import read_image
from medres.io.dicom import read_dicom_dataset
from medres.models.scope import ImageFacts, check_chest_xray_scope, chest_xray_scope_error
from tests.conftest import SAMPLE_DATA, dicom_test_file


def header_facts(path: Path) -> ImageFacts:
    """The facts `medres score` decides from: the header, pixel data left on disk (not decoded)."""
    return ImageFacts.from_dataset(read_dicom_dataset(path))


def reason_of(facts: ImageFacts) -> str | None:
    error = chest_xray_scope_error(facts)
    return None if error is None else error.reason


def edited_copy(source: Path, target: Path, **elements: object) -> Path:
    """A copy of a real DICOM file with some header elements changed (a lateral view, two frames ...)."""
    dataset = pydicom.dcmread(source)
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    dataset.save_as(target)
    return target


@pytest.mark.parametrize(("name", "reason"), [
    ("CT_small.dcm", "out_of_scope_modality"),
    ("MR_small.dcm", "out_of_scope_modality"),
    ("JPEG-lossy.dcm", "out_of_scope_modality"),  # NM, whole body
    ("RG3_UNCR.dcm", "out_of_scope_body_part"),  # CR of an extremity
    ("RG1_UNCR.dcm", None),  # CR chest PA
])
def test_real_dicom_headers(name: str, reason: str | None) -> None:
    assert reason_of(header_facts(dicom_test_file(name))) == reason


def test_cross_sectional_messages_point_to_segment_and_never_to_a_segmentation_model() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG-lossy.dcm"):
        with pytest.raises(OutOfScopeError, match="cross-sectional image") as caught:
            check_chest_xray_scope(header_facts(dicom_test_file(name)))
        assert "segment CT/MR volumes with `medres segment`" in str(caught.value)
        assert "needs_segmentation_model" not in caught.value.one_line()
    nm = header_facts(dicom_test_file("JPEG-lossy.dcm"))
    assert nm.modality == "NM" and "nuclear medicine" in str(chest_xray_scope_error(nm))


def test_a_lateral_chest_film_is_out_of_view(tmp_path: Path) -> None:
    lateral = edited_copy(SAMPLE_DATA / "cr_chest_monochrome1.dcm", tmp_path / "lateral.dcm", ViewPosition="LL")
    error = chest_xray_scope_error(header_facts(lateral))
    assert error is not None and error.reason == "out_of_scope_view"
    assert "ViewPosition is LL" in str(error) and "frontal" in str(error)
    assert reason_of(header_facts(SAMPLE_DATA / "cr_chest_monochrome1.dcm")) is None


def test_multi_frame_and_volumes_are_out_of_dimensionality(tmp_path: Path) -> None:
    two_frames = edited_copy(SAMPLE_DATA / "cr_chest_monochrome1.dcm", tmp_path / "frames.dcm", NumberOfFrames=2)
    assert reason_of(header_facts(two_frames)) == "out_of_scope_dimensionality"
    assert reason_of(ImageFacts(source_format="nifti")) == "out_of_scope_dimensionality"
    volume = ImageFacts.from_image(read_image(SAMPLE_DATA / "volume_oblique.nii.gz"))
    assert volume.spatial_dimensions == 3 and reason_of(volume) == "out_of_scope_dimensionality"
    series = ImageFacts.from_image(read_image(SAMPLE_DATA / "ct_series"))
    assert reason_of(series) == "out_of_scope_modality", "a CT series: the modality is the first thing wrong"


def test_png_has_no_header_and_is_taken_as_given() -> None:
    facts = ImageFacts.from_image(read_image(SAMPLE_DATA / "chest.png"))
    assert facts.source_format == "png" and facts.modality == "" and reason_of(facts) is None


def test_no_pixel_data_keeps_its_own_reason() -> None:
    dicomdir = header_facts(dicom_test_file("DICOMDIR"))
    with pytest.raises(NoPixelDataError):
        check_chest_xray_scope(dicomdir)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "RG3_UNCR.dcm", "RG1_UNCR.dcm"])
def test_header_and_decoded_image_get_the_same_answer(name: str) -> None:
    """`medres score` decides from the header, the app from the decoded Image: both must agree."""
    path = dicom_test_file(name)
    assert reason_of(ImageFacts.from_image(read_image(path))) == reason_of(header_facts(path))


def test_the_lateral_gets_the_same_answer_from_its_decoded_image(tmp_path: Path) -> None:
    lateral = edited_copy(SAMPLE_DATA / "cr_chest_monochrome1.dcm", tmp_path / "lateral.dcm", ViewPosition="LL")
    assert reason_of(ImageFacts.from_image(read_image(lateral))) == "out_of_scope_view"


def test_refusals_are_medres_errors_with_a_one_line_reason() -> None:
    error = chest_xray_scope_error(header_facts(dicom_test_file("CT_small.dcm")))
    assert isinstance(error, MedresError)
    assert error.one_line().startswith("out_of_scope_modality: modality CT (computed tomography)")
