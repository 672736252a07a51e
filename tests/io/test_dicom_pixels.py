"""Pixel semantics of real DICOM files: compression, polarity, HU, VOI, colour, frames."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from medres.io import read_image
from tests.conftest import dicom_test_file

LOSSLESS_PAIRS = [
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, MONOCHROME1 chest CR
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ("693_J2KR.dcm", "693_UNCR.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE
    ("emri_small_RLE.dcm", "emri_small.dcm"),  # RLE, multi-frame
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb.dcm"),  # JPEG lossless (process 14, SV1)
    ("MR_small_bigendian.dcm", "MR_small.dcm"),  # explicit VR big endian
    ("MR_small_implicit.dcm", "MR_small.dcm"),  # implicit VR little endian
    ("SC_rgb_rle.dcm", "SC_rgb.dcm"),
    ("US1_J2KR.dcm", "US1_UNCR.dcm"),  # YBR_RCT colour
]
# Lossy: RMS error at most 3 % of the uncompressed image's dynamic range (measured: 0.1-2.7 %).
LOSSY_PAIRS = [("RG1_J2KI.dcm", "RG1_UNCR.dcm"), ("MR2_J2KI.dcm", "MR2_UNCR.dcm"),
               ("693_J2KI.dcm", "693_UNCR.dcm"), ("US1_J2KI.dcm", "US1_UNCR.dcm"),
               ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb.dcm")]
LOSSY_RMS_TOLERANCE = 0.03


@pytest.mark.parametrize(("compressed", "reference"), LOSSLESS_PAIRS)
def test_lossless_versions_decode_to_identical_pixels(compressed, reference):
    np.testing.assert_array_equal(read_image(dicom_test_file(compressed)).array,
                                  read_image(dicom_test_file(reference)).array)


@pytest.mark.parametrize(("compressed", "reference"), LOSSY_PAIRS)
def test_lossy_versions_stay_within_tolerance(compressed, reference):
    lossy, exact = read_image(dicom_test_file(compressed)).array, read_image(dicom_test_file(reference)).array
    dynamic_range = float(exact.max() - exact.min())
    rms = float(np.sqrt(np.mean((lossy - exact) ** 2)))
    assert rms / dynamic_range <= LOSSY_RMS_TOLERANCE


def test_monochrome1_chest_radiograph_has_monochrome2_polarity():
    image = read_image(dicom_test_file("RG1_UNCR.dcm"))
    assert image.meta["photometric_interpretation"] == "MONOCHROME1"
    pixels = image.array[0]
    rows, cols = pixels.shape
    band = slice(int(0.3 * rows), int(0.6 * rows))
    lungs = np.concatenate([pixels[band, int(0.2 * cols):int(0.35 * cols)].ravel(),
                            pixels[band, int(0.65 * cols):int(0.8 * cols)].ravel()]).mean()
    mediastinum = pixels[band, int(0.46 * cols):int(0.54 * cols)].mean()
    air_above_shoulders = pixels[: int(0.05 * rows), : int(0.08 * cols)].mean()
    assert air_above_shoulders < lungs < mediastinum  # air dark, bone and soft tissue bright


def test_monochrome1_is_the_inverted_pydicom_window():
    path = dicom_test_file("RG1_UNCR.dcm")
    dataset = pydicom.dcmread(path)
    windowed = apply_voi_lut(apply_modality_lut(dataset.pixel_array, dataset), dataset)
    expected = windowed.max() + windowed.min() - windowed  # data range here equals the window's range
    image = read_image(path).array[0]
    assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.9999


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm", "693_J2KR.dcm"])
def test_ct_values_equal_pydicom_modality_lut_in_hounsfield_units(name):
    path = dicom_test_file(name)
    dataset = pydicom.dcmread(path)
    expected = apply_modality_lut(dataset.pixel_array, dataset)
    image = read_image(path)
    np.testing.assert_allclose(image.array[0], expected, rtol=0, atol=1e-3)
    assert image.modality == "CT" and image.array.min() < -500  # air in HU, no window applied


def test_cr_window_is_applied_as_pydicom_does():
    path = dicom_test_file("RG3_UNCR.dcm")
    dataset = pydicom.dcmread(path)
    windowed = apply_voi_lut(apply_modality_lut(dataset.pixel_array, dataset), dataset)
    inverted = windowed.max() + windowed.min() - windowed
    assert np.corrcoef(read_image(path).array[0].ravel(), inverted.ravel())[0, 1] > 0.9999


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "US1_UNCR.dcm", "SC_ybr_full_uncompressed.dcm"])
def test_colour_is_converted_to_luminance(name):
    path = dicom_test_file(name)
    rgb = pydicom.dcmread(path).pixel_array.astype(np.float32)
    expected = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    image = read_image(path)
    assert image.array.shape == (1, *rgb.shape[:2])
    np.testing.assert_allclose(image.array[0], expected, atol=1e-3)


def test_palette_colour_goes_through_the_colour_lut():
    path = dicom_test_file("OBXXXX1A.dcm")
    dataset = pydicom.dcmread(path)
    rgb = apply_color_lut(dataset.pixel_array, dataset).astype(np.float32)
    image = read_image(path)
    np.testing.assert_allclose(image.array[0], rgb @ np.array([0.299, 0.587, 0.114], np.float32), rtol=1e-5)


def test_multiframe_without_positions_is_a_frame_stack():
    image = read_image(dicom_test_file("emri_small.dcm"))
    assert image.array.shape == (1, 64, 64, 10)
    assert image.meta["geometry"] == "frame_stack"
    frames = pydicom.dcmread(dicom_test_file("emri_small.dcm")).pixel_array
    np.testing.assert_array_equal(image.array[0, :, :, 3], frames[3])


def test_enhanced_multiframe_with_positions_is_a_ras_volume():
    image = read_image(dicom_test_file("eCT_Supplemental.dcm"))
    assert image.meta["geometry"] == "volume" and image.is_volume
    assert image.spacing[2] == pytest.approx(10.0)
