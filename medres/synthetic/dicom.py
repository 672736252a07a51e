"""Writing synthetic DICOM files with known content and geometry.

Used by ``sample_data/make_samples.py``, the tests (series with gaps, mixed
series, planted identifiers) and the synthetic phantoms. Everything is
deterministic: UIDs derive from the caller's seed strings, and the file meta
names medres rather than the installed pydicom version, so rewriting a file
gives the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1515.1"
IMPLEMENTATION_VERSION = "MEDRES_0_1"
SYNTHETIC_IDENTIFIERS = {"PatientName": "Synthetic^Phantom", "PatientID": "SYNTHETIC-0001"}
COMPUTED_RADIOGRAPHY_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DIGITAL_XRAY_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def deterministic_uid(*parts: object) -> str:
    """A UUID-derived UID (``2.25.<128-bit int>``, PS3.5 B.2) that depends only on ``parts``."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def projection_dataset(
    pixels: np.ndarray,
    *,
    uid_seed: str,
    modality: str = "CR",
    photometric: str = "MONOCHROME1",
    window: tuple[float, float] | None = None,
    view_position: str = "PA",
    body_part: str = "CHEST",
    imager_spacing: tuple[float, float] = (0.2, 0.2),
    identifiers: dict[str, str] | None = None,
) -> Dataset:
    """A projection radiograph (CR/DX) holding unsigned 16-bit ``pixels`` (rows, cols)."""
    sop_class = COMPUTED_RADIOGRAPHY_STORAGE if modality == "CR" else DIGITAL_XRAY_STORAGE
    dataset = _base_dataset(sop_class, uid_seed, modality, identifiers)
    dataset.ViewPosition = view_position
    dataset.BodyPartExamined = body_part
    dataset.ImagerPixelSpacing = [f"{imager_spacing[0]:g}", f"{imager_spacing[1]:g}"]
    dataset.PatientOrientation = ["L", "F"]
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    _set_pixels(dataset, np.asarray(pixels, np.uint16), photometric, signed=False)
    return dataset


def ct_slice_dataset(
    hounsfield: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    instance_number: int,
    series_seed: str,
    identifiers: dict[str, str] | None = None,
) -> Dataset:
    """One CT slice: ``hounsfield`` (rows, cols) stored as int16 with intercept -1024."""
    dataset = _base_dataset(CTImageStorage, f"{series_seed}/{instance_number}/{list(position)}", "CT", identifiers)
    dataset.StudyInstanceUID = deterministic_uid(series_seed, "study")
    dataset.SeriesInstanceUID = deterministic_uid(series_seed, "series")
    dataset.FrameOfReferenceUID = deterministic_uid(series_seed, "frame-of-reference")
    dataset.InstanceNumber = instance_number
    dataset.ImagePositionPatient = [f"{value:.6f}" for value in position]
    dataset.ImageOrientationPatient = [f"{value:.8f}" for value in orientation]
    dataset.PixelSpacing = [f"{pixel_spacing[0]:g}", f"{pixel_spacing[1]:g}"]
    dataset.SliceThickness = f"{slice_thickness:g}"
    dataset.RescaleIntercept, dataset.RescaleSlope, dataset.RescaleType = "-1024", "1", "HU"
    stored = np.clip(np.round(np.asarray(hounsfield) + 1024), -32768, 32767).astype(np.int16)
    _set_pixels(dataset, stored, "MONOCHROME2", signed=True)
    return dataset


def write_ct_series(
    folder: Path,
    hounsfield: np.ndarray,
    *,
    origin: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: tuple[float, float],
    slice_step: float,
    series_seed: str,
    instance_numbers: Sequence[int] | None = None,
    identifiers: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``hounsfield`` (slices, rows, cols) as a CT series, one file per slice.

    Slice ``k`` lies at ``origin + k * slice_step * normal`` (LPS mm). Files
    are named by ``instance_numbers`` (default 1..n), which callers scramble to
    prove that readers sort by position, not by number.
    """
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    numbers = list(instance_numbers or range(1, len(hounsfield) + 1))
    paths = []
    for index, (slice_hu, number) in enumerate(zip(hounsfield, numbers)):
        position = np.asarray(origin, float) + index * slice_step * normal
        dataset = ct_slice_dataset(
            slice_hu, position=position, orientation=orientation, pixel_spacing=pixel_spacing,
            slice_thickness=slice_step, instance_number=number, series_seed=series_seed, identifiers=identifiers,
        )
        paths.append(write_dicom(dataset, folder / f"IM{number:04d}.dcm"))
    return paths


def write_dicom(dataset: Dataset, path: Path) -> Path:
    """Write ``dataset`` as a DICOM Part 10 file with a fixed (reproducible) file meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _base_dataset(sop_class: str, uid_seed: str, modality: str, identifiers: dict[str, str] | None) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    dataset.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = deterministic_uid(uid_seed, "instance")
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.StudyInstanceUID = deterministic_uid(uid_seed, "study")
    dataset.SeriesInstanceUID = deterministic_uid(uid_seed, "series")
    dataset.Modality = modality
    for keyword, value in (identifiers or SYNTHETIC_IDENTIFIERS).items():
        setattr(dataset, keyword, value)
    return dataset


def _set_pixels(dataset: Dataset, pixels: np.ndarray, photometric: str, *, signed: bool) -> None:
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = dataset.BitsStored = pixels.dtype.itemsize * 8
    dataset.HighBit = dataset.BitsStored - 1
    dataset.PixelRepresentation = int(signed)
    dataset.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


def radiograph_from_png(
    png_path: Path,
    dicom_path: Path,
    *,
    uid_seed: str,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    view_position: str = "PA",
    body_part: str = "CHEST",
    identifiers: dict[str, str] | None = None,
) -> Path:
    """Wrap an 8-bit grayscale PNG as a 12-bit projection radiograph DICOM (synthetic PACS exports).

    MONOCHROME1 stores the inverted values, so medres must invert them back.
    """
    from PIL import Image as PILImage

    brightness = np.asarray(PILImage.open(png_path).convert("L"), dtype=np.float64) / 255.0
    if photometric == "MONOCHROME1":
        brightness = 1.0 - brightness
    stored = np.round(brightness * 4095).astype(np.uint16)
    dataset = projection_dataset(stored, uid_seed=uid_seed, modality=modality, photometric=photometric,
                                 window=(2048, 4096), view_position=view_position, body_part=body_part,
                                 identifiers=identifiers)
    dataset.BitsStored, dataset.HighBit = 12, 11
    return write_dicom(dataset, dicom_path)
