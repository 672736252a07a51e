"""Reading a folder that holds one DICOM series as a RAS+ volume.

Slices are sorted along the slice normal computed from ImageOrientationPatient
and ImagePositionPatient (InstanceNumber is never trusted), spacing comes from
the positions of the whole stack and is checked for uniformity, and every
slice's own Modality LUT is applied (CT in HU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medres.errors import InconsistentGeometryError, MixedSeriesError, NotDicomError
from medres.io.assemble import pixel_spacing, volume_from_slices
from medres.io.budget import check_size_budget
from medres.io.detect import looks_like_dicom
from medres.io.dicom import apply_pixel_semantics, decode_frames, drop_pixel_data, read_dicom_dataset
from medres.io.geometry import check_same_orientation, voxel_spacing
from medres.io.image import Image
from medres.io.metadata import dicom_meta

IGNORED_NAMES = frozenset({"DICOMDIR"})


@dataclass(frozen=True)
class SeriesSlice:
    """One slice's file and the header fields that place it."""

    path: Path
    dataset: Dataset
    position: np.ndarray
    orientation: np.ndarray


def list_dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (by content), skipping DICOMDIR and hidden files."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.name not in IGNORED_NAMES
        and looks_like_dicom(path)
    )


def read_dicom_series(folder: str | Path, *, size_budget: int) -> Image:
    """Read a folder holding exactly one DICOM series into a ``(1, X, Y, Z)`` RAS+ volume.

    The slices' headers (pixel data dropped) stay on the image as ``sources``,
    in file-name order, for writers that reference the series (a DICOM SEG).

    Raises:
        MixedSeriesError: More than one SeriesInstanceUID, or two slices at one position.
        NonUniformSpacingError: A missing slice or uneven steps, naming the gap.
        InconsistentGeometryError: Slices of different size/orientation, or a sheared stack.
    """
    folder = Path(folder)
    files = list_dicom_files(folder)
    if not files:
        raise NotDicomError("the folder holds no DICOM files", path=folder)
    slices = [_read_slice(path) for path in files]
    _check_single_series(slices, folder)
    names = [item.path.name for item in slices]
    _check_same_size(slices, names, folder)
    check_same_orientation(np.stack([item.orientation for item in slices]), names, folder)
    first = slices[0].dataset
    rows, columns = int(first.Rows), int(first.Columns)
    check_size_budget((rows, columns, len(slices)), 4, size_budget, folder)
    values = np.stack([_slice_values(item, size_budget) for item in slices])
    row_spacing, column_spacing, _ = pixel_spacing(first)
    positions = np.stack([item.position for item in slices])
    array, affine = volume_from_slices(
        values, positions, slices[0].orientation, (row_spacing, column_spacing), names, folder
    )
    meta = dicom_meta(first) | {"source_format": "dicom_series", "geometry": "volume", "n_slices": len(slices)}
    meta.pop("sop_instance_uid", None)
    meta.pop("instance_number", None)
    sources = tuple(drop_pixel_data(item.dataset) for item in slices)
    return Image(array, voxel_spacing(affine), affine, meta, str(first.get("Modality", "") or "OT"), sources)


def _read_slice(path: Path) -> SeriesSlice:
    dataset = read_dicom_dataset(path)
    orientation = dataset.get("ImageOrientationPatient")
    position = dataset.get("ImagePositionPatient")
    if orientation is None or position is None or len(orientation) != 6 or len(position) != 3:
        raise InconsistentGeometryError(
            "no ImagePositionPatient/ImageOrientationPatient, so the slice cannot be placed in a volume",
            path=path,
        )
    return SeriesSlice(path, dataset, np.asarray(position, float), np.asarray(orientation, float))


def _check_single_series(slices: list[SeriesSlice], folder: Path) -> None:
    series = {}
    for item in slices:
        series.setdefault(str(item.dataset.get("SeriesInstanceUID", "")), []).append(item.path.name)
    if len(series) > 1:
        examples = "; ".join(f"{len(names)} file(s) such as {names[0]}" for names in series.values())
        raise MixedSeriesError(
            f"{len(series)} series in one folder ({examples}); put each series in its own folder",
            path=folder,
        )


def _check_same_size(slices: list[SeriesSlice], names: list[str], folder: Path) -> None:
    sizes = [(item.dataset.get("Rows"), item.dataset.get("Columns")) for item in slices]
    for name, size in zip(names, sizes):
        if size != sizes[0]:
            raise InconsistentGeometryError(
                f"{name} is {size[0]}x{size[1]} while {names[0]} is {sizes[0][0]}x{sizes[0][1]}",
                path=folder,
            )


def _slice_values(item: SeriesSlice, size_budget: int) -> np.ndarray:
    frames = decode_frames(item.dataset, item.path, size_budget=size_budget)
    if frames.shape[0] != 1:
        raise InconsistentGeometryError("a multi-frame file inside a series folder", path=item.path)
    return apply_pixel_semantics(frames, item.dataset, item.path)[0]
