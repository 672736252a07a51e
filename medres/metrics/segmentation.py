"""Segmentation metrics in millimetres, correct for anisotropic voxels.

CT and MRI voxels are rarely cubes (0.7 x 0.7 x 2.5 mm is common), so surface
distances must be measured in millimetres along each axis, never in voxels.

Definitions (stated because tools disagree):

* The *surface* of a mask is the mask minus its erosion by a full-connectivity
  structuring element (3x3 in 2D, 3x3x3 in 3D); voxels on the array border
  count as surface, as if the outside were background.
* Surface distances are centre-to-centre Euclidean distances between surface
  voxels, in mm, from ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``,
  which is exact for anisotropic spacing.
* HD95 is the 95th percentile (linear interpolation) of the *pooled* distances
  of both directions (pred -> truth and truth -> pred), as in MedPy's ``hd95``.
  MONAI's ``compute_hausdorff_distance`` instead takes the larger of the two
  directed percentiles and erodes with a face-connected element, so it is not
  used here: its numbers differ from these definitions.
* Surface Dice counts surface voxels (not surfel areas as in DeepMind's
  ``surface-distance``), so it can differ slightly from that package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from medres.errors import UsageError

_RELATIVE_ROUNDING_SLACK = 1e-9


def dice(pred_mask: ArrayLike, true_mask: ArrayLike) -> float:
    """Dice overlap ``2|P & T| / (|P| + |T|)`` of two binary masks.

    Both masks empty gives 1.0: the prediction correctly says there is nothing,
    which a per-case average over scans without the structure should reward.

    Args:
        pred_mask: Predicted binary mask (bool or 0/1), 2D or 3D.
        true_mask: Reference mask, same shape.
    """
    pred, true = _validated_masks(pred_mask, true_mask)
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / total


def hausdorff95_mm(pred_mask: ArrayLike, true_mask: ArrayLike, spacing: Sequence[float]) -> float:
    """95th percentile of the pooled symmetric surface distances, in mm.

    Robust to a few stray voxels, unlike the maximum (Hausdorff) distance.
    Conventions: both masks empty gives 0.0 (perfect agreement); exactly one
    empty gives ``inf`` (no surface to measure to), so a mean over cases must
    decide how to treat such cases explicitly.

    Args:
        pred_mask: Predicted binary mask (bool or 0/1), 2D or 3D.
        true_mask: Reference mask, same shape.
        spacing: Millimetres per voxel along each array axis.
    """
    pred, true = _validated_masks(pred_mask, true_mask)
    sampling = _validated_spacing(spacing, pred.ndim)
    pred_empty, true_empty = not pred.any(), not true.any()
    if pred_empty and true_empty:
        return 0.0
    if pred_empty or true_empty:
        return math.inf
    pred_to_true, true_to_pred = _directed_surface_distances_mm(pred, true, sampling)
    return float(np.percentile(np.concatenate([pred_to_true, true_to_pred]), 95))


def normalized_surface_dice(
    pred_mask: ArrayLike, true_mask: ArrayLike, spacing: Sequence[float], tolerance_mm: float
) -> float:
    """Fraction of both surfaces lying within ``tolerance_mm`` of the other surface.

    Rewards boundaries that are right to within what a reader would accept,
    which Dice does not (it is dominated by large, easy interiors).
    Conventions: both empty gives 1.0; exactly one empty gives 0.0.

    Args:
        pred_mask: Predicted binary mask (bool or 0/1), 2D or 3D.
        true_mask: Reference mask, same shape.
        spacing: Millimetres per voxel along each array axis.
        tolerance_mm: Largest distance counted as agreement; inclusive, and a distance
            equal to it up to floating-point rounding counts too.
    """
    pred, true = _validated_masks(pred_mask, true_mask)
    sampling = _validated_spacing(spacing, pred.ndim)
    if not tolerance_mm >= 0:
        raise UsageError(f"tolerance_mm must be a non-negative distance in mm, got {tolerance_mm!r}")
    pred_empty, true_empty = not pred.any(), not true.any()
    if pred_empty and true_empty:
        return 1.0
    if pred_empty or true_empty:
        return 0.0
    pred_to_true, true_to_pred = _directed_surface_distances_mm(pred, true, sampling)
    # Grid distances often equal the tolerance exactly (5 x 0.4 mm = 2 mm); absorb rounding so they count.
    limit = tolerance_mm * (1.0 + _RELATIVE_ROUNDING_SLACK)
    within = int(np.count_nonzero(pred_to_true <= limit)) + int(np.count_nonzero(true_to_pred <= limit))
    return within / (pred_to_true.size + true_to_pred.size)


def _validated_masks(pred_mask: ArrayLike, true_mask: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of one 2D or 3D shape; label maps and probabilities are refused."""
    pred, true = np.asarray(pred_mask), np.asarray(true_mask)
    if pred.shape != true.shape:
        raise UsageError(
            f"pred_mask has shape {pred.shape} but true_mask has shape {true.shape}; they must match"
        )
    if pred.ndim not in (2, 3):
        raise UsageError(
            f"masks must be 2D or 3D spatial arrays, got shape {pred.shape}; "
            "drop the channel axis of a channel-first array (mask[0])"
        )
    for name, mask in (("pred_mask", pred), ("true_mask", true)):
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise UsageError(
                f"{name} must be binary (bool or 0/1); threshold probabilities or select one label first"
            )
    return pred.astype(bool), true.astype(bool)


def _validated_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sampling = tuple(float(value) for value in spacing)
    if len(sampling) != ndim or not all(value > 0 and math.isfinite(value) for value in sampling):
        raise UsageError(
            f"spacing must be {ndim} positive millimetre values, one per mask axis; got {spacing!r}"
        )
    return sampling


def _directed_surface_distances_mm(
    pred: np.ndarray, true: np.ndarray, sampling: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from each pred surface voxel to the true surface, and the reverse.

    Both masks are first cropped to their joint bounding box plus one voxel:
    every surface voxel lies inside it and erosion sees the same neighbours,
    so distances are unchanged while a whole CT volume costs only its ROI.
    """
    pred, true = _crop_to_joint_bounding_box(pred, true)
    pred_surface, true_surface = _surface(pred), _surface(true)
    distance_to_true = ndimage.distance_transform_edt(~true_surface, sampling=sampling)
    distance_to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return distance_to_true[pred_surface], distance_to_pred[true_surface]


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with at least one background neighbour (full connectivity, border = background)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_joint_bounding_box(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    foreground = np.argwhere(pred | true)
    start = np.maximum(foreground.min(axis=0) - 1, 0)
    stop = np.minimum(foreground.max(axis=0) + 2, pred.shape)
    region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    return pred[region], true[region]
