"""Turn decoded DICOM frames into an ``Image`` with its geometry.

- one frame: a 2D image ``(1, rows, cols)`` in display orientation;
- several frames with per-frame positions (enhanced CT/MR): a RAS+ volume,
  through the same sorting and checks as a series folder;
- several frames without positions (cine, NM, ultrasound): a stack
  ``(1, rows, cols, frames)`` with ``meta["geometry"] == "frame_stack"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medres.io.geometry import (
    LPS_TO_RAS,
    slice_normal,
    sort_along_normal,
    stack_affine_ras,
    to_closest_canonical,
    voxel_spacing,
)
from medres.io.image import Image
from medres.io.metadata import dicom_meta


def image_from_frames(values: np.ndarray, dataset: Dataset, path) -> Image:
    """Build the ``Image`` for one DICOM file's decoded ``(frames, rows, cols)`` values."""
    meta = dicom_meta(dataset)
    modality = str(dataset.get("Modality", "") or "OT")
    row_spacing, column_spacing, spacing_known = pixel_spacing(dataset)
    meta["spacing_known"] = spacing_known
    if values.shape[0] == 1:
        meta["geometry"] = "plane"
        affine = plane_affine(dataset, row_spacing, column_spacing)
        return Image(values, (row_spacing, column_spacing), affine, meta, modality)
    positions = per_frame_positions(dataset)
    orientation = functional_group_value(dataset, "PlaneOrientationSequence", "ImageOrientationPatient")
    if positions is not None and orientation is not None:
        names = [f"frame {index + 1}" for index in range(values.shape[0])]
        array, affine = volume_from_slices(values, positions, orientation, (row_spacing, column_spacing), names, path)
        meta["geometry"] = "volume"
        return Image(array, voxel_spacing(affine), affine, meta, modality)
    meta["geometry"] = "frame_stack"
    frame_step = _positive(dataset.get("SpacingBetweenSlices")) or _positive(dataset.get("SliceThickness")) or 1.0
    stack = np.ascontiguousarray(np.moveaxis(values, 0, -1))[None]
    affine = np.diag([row_spacing, column_spacing, frame_step, 1.0])
    return Image(stack, (row_spacing, column_spacing, frame_step), affine, meta, modality)


def volume_from_slices(
    slices: np.ndarray,
    positions: np.ndarray,
    orientation: Sequence[float],
    spacing_rows_columns: tuple[float, float],
    names: Sequence[str],
    path,
) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``(n, rows, cols)`` slices along their normal into a RAS+ ``(1, X, Y, Z)`` volume."""
    order, step_vector = sort_along_normal(positions, orientation, names, path)
    if len(order) == 1:
        step_vector = slice_normal(orientation)
    stacked = np.transpose(slices[order], (2, 1, 0))[None]  # (1, cols, rows, slices)
    affine = stack_affine_ras(positions[order[0]], orientation, spacing_rows_columns, step_vector)
    return to_closest_canonical(stacked, affine)


def pixel_spacing(dataset: Dataset) -> tuple[float, float, bool]:
    """(row spacing, column spacing, known) from PixelSpacing, ImagerPixelSpacing or functional groups."""
    candidates = (
        dataset.get("PixelSpacing"),
        dataset.get("ImagerPixelSpacing"),
        functional_group_value(dataset, "PixelMeasuresSequence", "PixelSpacing"),
    )
    for value in candidates:
        try:
            row, column = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return row, column, True
    return 1.0, 1.0, False


def plane_affine(dataset: Dataset, row_spacing: float, column_spacing: float) -> np.ndarray:
    """Index (row, column, 0) -> RAS+ mm; scaling only when the slice has no patient geometry."""
    orientation = dataset.get("ImageOrientationPatient")
    position = dataset.get("ImagePositionPatient")
    if orientation is None or position is None or len(orientation) != 6 or len(position) != 3:
        return np.diag([row_spacing, column_spacing, 1.0, 1.0])
    row_cosine, column_cosine = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = column_cosine * row_spacing  # moving down a row follows the column cosine
    affine_lps[:3, 1] = row_cosine * column_spacing
    affine_lps[:3, 2] = slice_normal(orientation) * (_positive(dataset.get("SliceThickness")) or 1.0)
    affine_lps[:3, 3] = np.asarray(position, float)
    return LPS_TO_RAS @ affine_lps


def per_frame_positions(dataset: Dataset) -> np.ndarray | None:
    """ImagePositionPatient of every frame of an enhanced multi-frame object, if all are given."""
    groups = dataset.get("PerFrameFunctionalGroupsSequence")
    if not groups:
        return None
    positions = []
    for group in groups:
        plane = group.get("PlanePositionSequence")
        if not plane or plane[0].get("ImagePositionPatient") is None:
            return None
        positions.append([float(v) for v in plane[0].ImagePositionPatient])
    return np.asarray(positions)


def functional_group_value(dataset: Dataset, sequence: str, keyword: str) -> Any:
    """A value from the shared functional groups, else from the first frame's."""
    for groups_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = dataset.get(groups_keyword)
        if groups and groups[0].get(sequence):
            value = groups[0].get(sequence)[0].get(keyword)
            if value is not None:
                return value
    return None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
