"""Bad input: a typed MedresError with a reason code, never another exception."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from medres.errors import MedresError
from medres.io import read_image
from medres.io.metadata import IDENTIFYING_KEYWORDS
from medres.synthetic.dicom import projection_dataset, write_dicom
from tests.conftest import dicom_test_file

PLANTED = {"PatientName": "Doe^Jane^Planted", "PatientID": "PID-99887766", "PatientBirthDate": "19450101",
           "AccessionNumber": "ACC-55443322", "InstitutionName": "Planted General Hospital",
           "ReferringPhysicianName": "House^Gregory"}


def small_radiograph(tmp_path, name="x.dcm", **overrides):
    pixels = (np.arange(32 * 24, dtype=np.uint16).reshape(32, 24) * 7) % 4096
    dataset = projection_dataset(pixels, uid_seed=name, identifiers=PLANTED, **overrides)
    return write_dicom(dataset, tmp_path / name), dataset


def assert_refused(path, reason, match=None, **kwargs):
    with pytest.raises(MedresError, match=match) as caught:
        read_image(path, **kwargs)
    assert caught.value.reason == reason, caught.value.one_line()
    return caught.value


def test_empty_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert_refused(tmp_path / "empty.dcm", "truncated", match="empty")


def test_text_file_named_dcm(tmp_path):
    (tmp_path / "notes.dcm").write_text("Patient notes, not an image\n" * 20)
    assert_refused(tmp_path / "notes.dcm", "not_dicom")


def test_missing_path(tmp_path):
    assert_refused(tmp_path / "nowhere.dcm", "not_found")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.02])
def test_truncated_dicom(tmp_path, fraction):
    data = dicom_test_file("RG1_UNCR.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * fraction)])
    assert_refused(tmp_path / "cut.dcm", "truncated")


def test_truncated_compressed_dicom(tmp_path):
    data = dicom_test_file("RG1_J2KR.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path / "cut.dcm", "truncated")


def test_report_without_pixels():
    assert_refused(dicom_test_file("rtplan.dcm"), "no_pixel_data", match="RT Plan")


def test_transfer_syntax_without_any_decoder(tmp_path):
    path, dataset = small_radiograph(tmp_path)
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless  # then renamed to an unknown syntax
    dataset.PixelData = encapsulate([b"\x00" * 16])
    dataset["PixelData"].VR = "OB"
    write_dicom(dataset, path)
    path.write_bytes(path.read_bytes().replace(JPEG2000Lossless.encode(), b"1.2.840.10008.1.2.4.98"))
    assert_refused(path, "unsupported_transfer_syntax", match="1.2.840.10008.1.2.4.98")


def test_missing_decoder_plugin_names_the_package(monkeypatch):
    missing = SimpleNamespace(is_available=False, missing_dependencies=["pylibjpeg-openjpeg>=2.0"])
    monkeypatch.setattr("medres.io.dicom.get_decoder", lambda uid: missing)
    assert_refused(dicom_test_file("RG1_J2KR.dcm"), "unsupported_transfer_syntax",
                   match="pip install pylibjpeg-openjpeg")


def test_unsupported_photometric(tmp_path):
    path, dataset = small_radiograph(tmp_path)
    dataset.PhotometricInterpretation = "HSV"
    write_dicom(dataset, path)
    assert_refused(path, "unsupported_photometric", match="HSV")


@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, JPEG2000Lossless, RLELossless])
def test_garbage_compressed_pixels_are_corrupt(tmp_path, syntax):
    path, dataset = small_radiograph(tmp_path)
    dataset.file_meta.TransferSyntaxUID = syntax
    dataset.PixelData = encapsulate([bytes(range(256)) * 4])
    dataset["PixelData"].VR = "OB"
    write_dicom(dataset, path)
    assert_refused(path, "corrupt")


def test_declared_65535_squared_by_1000_frames_is_refused_with_little_memory(tmp_path):
    path, dataset = small_radiograph(tmp_path)
    dataset.file_meta.TransferSyntaxUID = JPEG2000Lossless
    dataset.Rows = dataset.Columns = 65535
    dataset.NumberOfFrames = 1000
    dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60] * 3)
    dataset["PixelData"].VR = "OB"
    write_dicom(dataset, path)
    tracemalloc.start()
    try:
        error = assert_refused(path, "too_large", match="65535 x 65535 x 1000")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 300 * 1024**2, f"peak {peak / 1024**2:.1f} MB"
    assert "size budget" in str(error)


def test_size_budget_is_configurable():
    path = dicom_test_file("RG1_UNCR.dcm")
    assert_refused(path, "too_large", size_budget=1024**2)
    assert read_image(path, size_budget=64 * 1024**2).array.shape == (1, 1955, 1841)


def test_declared_pixel_length_beyond_end_of_file_is_truncated(tmp_path):
    path, _ = small_radiograph(tmp_path)
    data = bytearray(path.read_bytes())
    marker = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData, explicit VR little endian
    data[marker + 8: marker + 12] = (10_000_000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert_refused(path, "truncated")


def test_meta_never_holds_identifying_values(tmp_path):
    path, _ = small_radiograph(tmp_path)
    image = read_image(path)
    text = json.dumps(image.meta)
    for value in PLANTED.values():
        assert value not in text and value.split("^")[0] not in text
    assert not set(image.meta) & {keyword.lower() for keyword in IDENTIFYING_KEYWORDS}
    assert image.meta["view_position"] == "PA" and image.meta["body_part_examined"] == "CHEST"
    assert image.meta["sop_instance_uid"] and image.meta["transfer_syntax"]


def test_executable_preamble_is_flagged(tmp_path):
    path, dataset = small_radiograph(tmp_path)
    dataset.preamble = b"MZ\x90\x00" + b"\x00" * 124
    dataset.save_as(path, enforce_file_format=True)
    assert read_image(path).meta["suspicious_preamble"] is True
    clean, _ = small_radiograph(tmp_path, "clean.dcm")
    assert read_image(clean).meta["suspicious_preamble"] is False


def test_no_other_exception_escapes_for_random_bytes(tmp_path):
    rng = np.random.default_rng(0)
    header = dicom_test_file("CT_small.dcm").read_bytes()[:600]
    for index in range(30):
        noise = rng.integers(0, 256, size=int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
        path = tmp_path / f"fuzz{index}.dcm"
        path.write_bytes(header[: int(rng.integers(0, 600))] + noise if index % 2 else noise)
        try:
            read_image(path)
        except MedresError:
            pass
