"""Reading DICOM files: header first, size check, then pixels through pydicom.

Pixel semantics, in order, all with pydicom's own functions:

1. decode (native, RLE, JPEG, JPEG-LS, JPEG 2000 via the pylibjpeg plugins);
2. colour (RGB, YBR_*, PALETTE COLOR) is converted to RGB by pydicom and then
   to luminance (ITU-R BT.601 weights): the models are grayscale, and refusing
   every ultrasound or secondary capture would make batch jobs noisier
   without making them safer. Other photometric interpretations are refused;
3. Modality LUT / RescaleSlope+Intercept (CT in HU);
4. for projection radiographs only (CR, DX, MG, ...), the VOI LUT or the first
   window, as the modality intended the image to be displayed;
5. MONOCHROME1 is inverted so that higher is brighter.

Steps 3-5 are applied to a lookup table over every possible stored value
(pydicom's functions on at most 65,536 values), then indexed by the pixels:
the same numbers as applying them to the image, several times faster.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medres.errors import (
    CorruptError,
    MedresError,
    NoPixelDataError,
    NotDicomError,
    TruncatedError,
    UnsupportedPhotometricError,
    UnsupportedTransferSyntaxError,
    library_message,
)
from medres.io.assemble import image_from_frames
from medres.io.budget import check_size_budget
from medres.io.detect import looks_like_dicom
from medres.io.image import Image

PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "PX", "IO", "RG", "DF"})
GRAY_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2"})
COLOR_PHOTOMETRICS = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}
)
LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
DEFER_LARGER_THAN = 256 * 1024  # element values above this size are read only on access
PIXEL_DATA_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
DECODER_PACKAGES = {
    "JPEG 2000": "pylibjpeg-openjpeg",
    "JPEG-LS": "pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg-libjpeg",
    "RLE": "pylibjpeg-rle",
}


@contextlib.contextmanager
def translate_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn pydicom/decoder exceptions for a bad file into typed ``MedresError`` s."""
    try:
        yield
    except MedresError:
        raise
    except InvalidDicomError as error:
        raise NotDicomError(path=path) from error
    except (EOFError, BufferError) as error:
        raise TruncatedError("the file ends early", path=path, quoted=library_message(error)) from error
    except MemoryError as error:
        raise CorruptError("decoding needed more memory than available", path=path) from error
    except Exception as error:  # decoders raise anything from ValueError to RuntimeError
        message = library_message(error)
        if any(word in message.lower() for word in ("truncat", "end of file", "too short", "less than")):
            raise TruncatedError("the file ends early", path=path, quoted=message) from error
        raise CorruptError("cannot decode", path=path, quoted=f"{type(error).__name__}: {message}") from error


def read_dicom_dataset(path: str | os.PathLike[str], *, defer_pixels: bool = True) -> Dataset:
    """Parse a DICOM file's elements.

    Args:
        path: The file.
        defer_pixels: Leave large values (pixel data) on disk, for decisions
            made from the header alone; ``False`` reads everything, for decoding.
    """
    defer_size = DEFER_LARGER_THAN if defer_pixels else None
    with translate_errors(path), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = pydicom.dcmread(path, defer_size=defer_size, force=_has_dicom_header(path))
    messages = [str(item.message) for item in caught]  # pydicom warns (never raises) on a cut-off file
    if any("End of file" in message or "truncat" in message.lower() for message in messages):
        raise TruncatedError("the file ends before its last element is complete", path=path)
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        raise NotDicomError(path=path)
    _fill_missing_transfer_syntax(dataset)
    return dataset


def _fill_missing_transfer_syntax(dataset: Dataset) -> None:
    """Files without (0002,0010) are native encodings; record the one pydicom detected."""
    file_meta = dataset.file_meta
    if file_meta.get("TransferSyntaxUID") is not None:
        return
    implicit_vr, little_endian = dataset.original_encoding
    if implicit_vr is None:
        return
    if implicit_vr:
        file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _has_dicom_header(path: str | os.PathLike[str]) -> bool:
    """True when the file starts like a DICOM stream; ``force`` is used only for those."""
    return looks_like_dicom(Path(path))


def read_dicom_file(path: str | os.PathLike[str], *, size_budget: int) -> Image:
    """Read one DICOM file into an ``Image`` (2D, a multi-frame stack, or a volume).

    Raises:
        MedresError: With a reason code for every way the file can be bad.
    """
    dataset = read_dicom_dataset(path)
    frames = decode_frames(dataset, path, size_budget=size_budget)
    values = apply_pixel_semantics(frames, dataset, path)
    return image_from_frames(values, dataset, path)


def decode_frames(dataset: Dataset, path, *, size_budget: int) -> np.ndarray:
    """Check and decode the pixel data to ``(frames, rows, cols)`` (colour already as luminance)."""
    pixel_tag = _pixel_data_keyword(dataset, path)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    _check_photometric(photometric, path)
    frames = int(_number(dataset.get("NumberOfFrames"), 1) or 1)
    samples = int(_number(dataset.get("SamplesPerPixel"), 1) or 1)
    bits = int(_number(dataset.get("BitsAllocated"), 8) or 8)
    shape = (int(_number(dataset.get("Rows"), 0)), int(_number(dataset.get("Columns"), 0)), frames, samples)
    check_size_budget(shape, max(1, (bits + 7) // 8), size_budget, path)
    if pixel_tag == "PixelData":
        _check_decoder_available(dataset, path)
    with_pixels = read_dicom_dataset(path, defer_pixels=False)
    if pixel_tag == "PixelData":
        _check_not_truncated(with_pixels, path)
    with translate_errors(path):
        pixels = with_pixels.pixel_array
    pixels = _to_luminance(pixels, dataset, photometric, samples, path)
    return pixels.reshape((frames, *pixels.shape[-2:]))


def drop_pixel_data(dataset: Dataset) -> Dataset:
    """``dataset`` without its pixel data elements (removed in place), to keep as a source header.

    A writer that references a source (a DICOM SEG) needs its header, not its
    pixels; a series' headers cost kilobytes where its pixels cost megabytes.
    """
    for keyword in PIXEL_DATA_TAGS:
        if keyword in dataset:
            delattr(dataset, keyword)
    return dataset


def _pixel_data_keyword(dataset: Dataset, path) -> str:
    for keyword in PIXEL_DATA_TAGS:
        if keyword in dataset:
            return keyword
    sop_class = getattr(dataset.get("SOPClassUID"), "name", None) or "unknown SOP class"
    raise NoPixelDataError(
        f"no pixel data ({sop_class}); medres reads images, not reports, plans or directories",
        path=path,
    )


def _check_photometric(photometric: str, path) -> None:
    if photometric not in GRAY_PHOTOMETRICS | COLOR_PHOTOMETRICS:
        raise UnsupportedPhotometricError(
            f"Photometric Interpretation {photometric or '(missing)'} is not supported; medres reads "
            f"{', '.join(sorted(GRAY_PHOTOMETRICS | COLOR_PHOTOMETRICS))}",
            path=path,
        )


def _check_decoder_available(dataset: Dataset, path) -> None:
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if syntax is None:
        return  # pydicom assumes implicit VR little endian; native decoding
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {syntax} ({syntax.name}) has no pixel decoder in pydicom; "
            "convert the file (e.g. `gdcmconv --raw`) to an uncompressed syntax",
            path=path,
        ) from error
    if not decoder.is_available:
        package = next((pkg for key, pkg in DECODER_PACKAGES.items() if key in syntax.name), "gdcm")
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {syntax.name} needs a decoder that is not installed; "
            f"`pip install {package}` (missing: {'; '.join(decoder.missing_dependencies)})",
            path=path,
        )


def _check_not_truncated(dataset: Dataset, path) -> None:
    """Pixel data that declares more bytes than the file holds is truncated.

    pydicom reads what is there without complaint, so the declared length is
    compared with the bytes actually read.
    """
    element = dataset.get_item("PixelData")
    length, value = getattr(element, "length", None), getattr(element, "value", None)
    if length in (None, 0xFFFFFFFF) or value is None:
        return  # encapsulated data with undefined length: the decoder finds the cut
    if len(value) < length:
        raise TruncatedError(f"pixel data declares {length} bytes but the file holds {len(value)}", path=path)


def _to_luminance(pixels: np.ndarray, dataset: Dataset, photometric: str, samples: int, path) -> np.ndarray:
    if photometric in GRAY_PHOTOMETRICS:
        if samples != 1:
            raise CorruptError(f"{photometric} with {samples} samples per pixel", path=path)
        return pixels
    with translate_errors(path):
        rgb = apply_color_lut(pixels, dataset) if photometric == "PALETTE COLOR" else pixels
    if rgb.shape[-1] != 3:
        raise CorruptError(f"{photometric} image without three colour samples", path=path)
    return rgb.astype(np.float32) @ LUMINANCE_WEIGHTS


def apply_pixel_semantics(frames: np.ndarray, dataset: Dataset, path) -> np.ndarray:
    """Modality LUT, VOI for projection radiographs, MONOCHROME1 inversion; float32 out."""
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in GRAY_PHOTOMETRICS:
        return frames.astype(np.float32, copy=False)
    with translate_errors(path):
        if frames.dtype.kind in "iu" and frames.dtype.itemsize <= 2:
            return _apply_table(frames, *value_lookup_table(dataset, frames.dtype))
        values = transform_values(frames, dataset)
        return _invert_if_monochrome1(values, photometric)


def value_lookup_table(dataset: Dataset, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Displayed value of every stored value of ``dtype``, through pydicom's LUT functions.

    Returns:
        The stored values (the table's domain) and the float32 table.
    """
    info = np.iinfo(dtype)
    stored = np.arange(info.min, info.max + 1, dtype=np.int64).astype(dtype)
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    return stored, _invert_if_monochrome1(transform_values(stored, dataset), photometric)


def _apply_table(frames: np.ndarray, stored: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Look pixels up in the table; as float arithmetic when the table is a clipped line.

    Rescale and linear windows (nearly every file) give a clipped straight
    line, which float arithmetic applies faster than a gather; the line is
    fitted to pydicom's table and used only if it reproduces every entry.
    """
    line = _clipped_line(stored.astype(np.float64), table)
    if line is None:
        first = int(stored[0])
        return table[frames.astype(np.int32) - first] if first else table[frames]
    slope, intercept, low, high = line
    values = frames.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    return np.clip(values, low, high, out=values)


def _clipped_line(domain: np.ndarray, table: np.ndarray) -> tuple[float, float, float, float] | None:
    low, high = float(table.min()), float(table.max())
    inside = np.flatnonzero((table > low) & (table < high))
    if inside.size < 2:
        return None
    first, last = inside[0], inside[-1]
    slope = (float(table[last]) - float(table[first])) / (domain[last] - domain[first])
    intercept = float(table[first]) - slope * domain[first]
    fitted = np.clip(domain * np.float32(slope) + np.float32(intercept), low, high)
    tolerance = 1e-5 * max(abs(low), abs(high), 1.0)
    return (slope, intercept, low, high) if np.abs(fitted - table).max() <= tolerance else None


def transform_values(values: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Modality LUT always; VOI LUT/window when the modality is a projection radiograph."""
    values = apply_modality_lut(values, dataset)
    if uses_voi(dataset):
        values = apply_voi_lut(values, dataset)
    return np.asarray(values, dtype=np.float32)


def uses_voi(dataset: Dataset) -> bool:
    """VOI is applied to projection radiographs that carry a VOI LUT or a window."""
    if str(dataset.get("Modality", "")).upper() not in PROJECTION_MODALITIES:
        return False
    has_window = dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None
    return bool(has_window or dataset.get("VOILUTSequence"))


def _invert_if_monochrome1(values: np.ndarray, photometric: str) -> np.ndarray:
    if photometric != "MONOCHROME1":
        return values
    return (values.max() + values.min()) - values


def _number(value: Any, default: float) -> float:
    """A header number, tolerating missing or malformed values."""
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


__all__ = ["read_dicom_file", "read_dicom_dataset", "decode_frames", "apply_pixel_semantics", "drop_pixel_data"]
