"""Slice-stack geometry: sorting along the normal, spacing checks, affines.

DICOM patient coordinates are LPS; medres affines are RAS+ (as NIfTI and
nibabel). Volumes are reoriented to the closest canonical (RAS+) voxel order
with nibabel's own orientation functions, so a DICOM series and the NIfTI of
the same data give identical arrays and affines.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from medres.errors import InconsistentGeometryError, MixedSeriesError, NonUniformSpacingError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RELATIVE_SPACING_TOLERANCE = 0.01  # 1 % of the median slice step
ABSOLUTE_SPACING_TOLERANCE_MM = 0.001


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of a slice from ImageOrientationPatient (row cosine x column cosine)."""
    row_cosine, column_cosine = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row_cosine, column_cosine)
    return normal / np.linalg.norm(normal)


def sort_along_normal(
    positions: np.ndarray,
    orientation: Sequence[float],
    names: Sequence[str],
    path: str | PathLike[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Order slices by their position along the normal and check the stack.

    Args:
        positions: ``(n, 3)`` ImagePositionPatient of each slice, in LPS mm.
        orientation: The shared ImageOrientationPatient.
        names: A label per slice (file name or frame number) for error messages.
        path: The series, named in errors.

    Returns:
        The sorting order and the mean step vector between consecutive slices
        (LPS mm), computed from the whole stack rather than its first two slices.

    Raises:
        MixedSeriesError: Two slices share one position.
        NonUniformSpacingError: A gap or uneven steps, naming the slices around it.
        InconsistentGeometryError: Positions drift within the slice plane (a sheared stack).
    """
    normal = slice_normal(orientation)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    sorted_distances = distances[order]
    if len(order) < 2:
        return order, normal.copy()
    steps = np.diff(sorted_distances)
    _check_no_duplicates(steps, order, names, path)
    _check_uniform_steps(steps, sorted_distances, order, names, path)
    step_vector = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    _check_not_sheared(positions[order], normal, sorted_distances, path)
    return order, step_vector


def _check_no_duplicates(steps: np.ndarray, order: np.ndarray, names: Sequence[str], path) -> None:
    duplicate = np.flatnonzero(steps < ABSOLUTE_SPACING_TOLERANCE_MM)
    if duplicate.size:
        first, second = names[order[duplicate[0]]], names[order[duplicate[0] + 1]]
        raise MixedSeriesError(
            f"{first} and {second} lie at the same slice position: two acquisitions "
            "(or duplicated files) are mixed in one series; separate them",
            path=path,
        )


def _check_uniform_steps(steps, sorted_distances, order, names, path) -> None:
    median_step = float(np.median(steps))
    tolerance = max(RELATIVE_SPACING_TOLERANCE * median_step, ABSOLUTE_SPACING_TOLERANCE_MM)
    uneven = np.flatnonzero(np.abs(steps - median_step) > tolerance)
    if uneven.size:
        k = int(uneven[0])
        raise NonUniformSpacingError(
            f"gap of {steps[k]:.3f} mm between {names[order[k]]} (at {sorted_distances[k]:.3f} mm) "
            f"and {names[order[k + 1]]} (at {sorted_distances[k + 1]:.3f} mm) where the series "
            f"steps {median_step:.3f} mm; {uneven.size} uneven step(s) in all, "
            "a slice is probably missing",
            path=path,
        )


def _check_not_sheared(sorted_positions, normal, sorted_distances, path) -> None:
    in_plane = sorted_positions - sorted_positions[0] - np.outer(
        sorted_distances - sorted_distances[0], normal
    )
    drift = float(np.abs(in_plane).max())
    if drift > 0.01 + 0.001 * abs(sorted_distances[-1] - sorted_distances[0]):
        raise InconsistentGeometryError(
            f"slice positions drift {drift:.2f} mm within the slice plane (gantry tilt or a "
            "sheared stack); resample it to an orthogonal grid first",
            path=path,
        )


def stack_affine_ras(
    first_position: Sequence[float],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    step_vector: Sequence[float],
) -> np.ndarray:
    """Affine from voxel index (column, row, slice) to RAS+ mm.

    Args:
        first_position: ImagePositionPatient of the first slice (LPS).
        orientation: ImageOrientationPatient (row cosine, then column cosine).
        pixel_spacing: PixelSpacing (between rows, between columns).
        step_vector: LPS displacement from one slice to the next.
    """
    row_cosine, column_cosine = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cosine * float(pixel_spacing[1])  # column index moves along the row
    affine_lps[:3, 1] = column_cosine * float(pixel_spacing[0])
    affine_lps[:3, 2] = np.asarray(step_vector, float)
    affine_lps[:3, 3] = np.asarray(first_position, float)
    return LPS_TO_RAS @ affine_lps


def to_closest_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a channel-first ``(C, X, Y, Z)`` array to RAS+ as ``nibabel.as_closest_canonical``.

    Returns:
        The reoriented array (C-contiguous) and its affine.
    """
    orientation = io_orientation(affine)
    if np.array_equal(orientation, [[0, 1], [1, 1], [2, 1]]):
        return np.ascontiguousarray(array), affine
    spatial_shape = array.shape[1:]
    channels = [apply_orientation(channel, orientation) for channel in array]
    new_affine = affine @ inv_ornt_aff(orientation, spatial_shape)
    return np.ascontiguousarray(np.stack(channels)), new_affine


def voxel_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Length of each voxel axis in mm, from the affine's columns."""
    return tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))


def check_same_orientation(orientations: np.ndarray, names: Sequence[str], path) -> None:
    """All slices of a stack must share one orientation (within 1e-4 of a cosine)."""
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    bad = np.flatnonzero(deviation > 1e-4)
    if bad.size:
        raise InconsistentGeometryError(
            f"{names[bad[0]]} is oriented differently from {names[0]} (a scout or localizer in the "
            "series?); remove it or split the series",
            path=path,
        )
