"""Segmentation metrics against hand examples and a brute-force millimetre reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from medres.errors import UsageError
from medres.metrics import dice, hausdorff95_mm, normalized_surface_dice


def brute_force_surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with any of their 3^d - 1 neighbours in the background (outside = background).

    Written with padding and shifts, independently of scipy's erosion.
    """
    padded = np.pad(mask, 1, constant_values=False)
    all_neighbours_foreground = np.ones_like(mask)
    for offset in itertools.product((-1, 0, 1), repeat=mask.ndim):
        window = tuple(slice(1 + o, 1 + o + size) for o, size in zip(offset, mask.shape, strict=True))
        all_neighbours_foreground &= padded[window]
    return mask & ~all_neighbours_foreground


def brute_force_directed_distances(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> tuple:
    """Every pairwise surface-point distance in mm, then the minimum per point, in both directions."""
    pred_points = np.argwhere(brute_force_surface(pred)) * np.asarray(spacing)
    true_points = np.argwhere(brute_force_surface(true)) * np.asarray(spacing)
    pairwise = np.sqrt(((pred_points[:, None, :] - true_points[None, :, :]) ** 2).sum(axis=-1))
    return pairwise.min(axis=1), pairwise.min(axis=0)


def random_blobs(shape: tuple[int, ...], seed: int, fill: float = 0.45) -> np.ndarray:
    """Irregular blobs (smoothed noise above a threshold) that touch the array border now and then."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma=1.2)
    return noise > np.quantile(noise, 1 - fill)


CASES = [
    pytest.param((14, 12, 9), (0.7, 1.3, 2.5), 0, id="3d-anisotropic-a"),
    pytest.param((10, 16, 7), (0.7, 1.3, 2.5), 1, id="3d-anisotropic-b"),
    pytest.param((9, 9, 9), (2.0, 0.5, 1.0), 2, id="3d-anisotropic-c"),
    pytest.param((30, 25), (0.4, 1.7), 3, id="2d-anisotropic"),
    pytest.param((20, 20), (1.0, 1.0), 4, id="2d-isotropic"),
]


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_hausdorff95_equals_brute_force(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int
) -> None:
    pred, true = random_blobs(shape, seed), random_blobs(shape, seed + 100)
    pred_to_true, true_to_pred = brute_force_directed_distances(pred, true, spacing)
    expected = np.percentile(np.concatenate([pred_to_true, true_to_pred]), 95)
    assert hausdorff95_mm(pred, true, spacing) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
@pytest.mark.parametrize("tolerance_mm", [0.0, 1.0, 2.0, 3.1])
def test_surface_dice_equals_brute_force(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int, tolerance_mm: float
) -> None:
    pred, true = random_blobs(shape, seed), random_blobs(shape, seed + 100)
    pred_to_true, true_to_pred = brute_force_directed_distances(pred, true, spacing)
    limit = tolerance_mm * (1 + 1e-9)  # exact ties (e.g. 5 x 0.4 mm = 2 mm) count, whatever the rounding
    within = np.sum(pred_to_true <= limit) + np.sum(true_to_pred <= limit)
    expected = within / (pred_to_true.size + true_to_pred.size)
    assert normalized_surface_dice(pred, true, spacing, tolerance_mm) == pytest.approx(expected, rel=1e-12)


def test_distances_are_in_millimetres_along_each_axis() -> None:
    """Two one-voxel squares, 3 voxels apart along an axis of 2.5 mm: every distance is 7.5 mm."""
    true = np.zeros((5, 5, 8), bool)
    pred = np.zeros((5, 5, 8), bool)
    true[1:4, 1:4, 2] = True
    pred[1:4, 1:4, 5] = True
    assert hausdorff95_mm(pred, true, (0.7, 1.3, 2.5)) == pytest.approx(7.5)
    assert normalized_surface_dice(pred, true, (0.7, 1.3, 2.5), tolerance_mm=7.4) == 0.0
    assert normalized_surface_dice(pred, true, (0.7, 1.3, 2.5), tolerance_mm=7.5) == 1.0


def test_identical_masks_are_perfect() -> None:
    mask = random_blobs((12, 12, 6), seed=9)
    assert dice(mask, mask) == 1.0
    assert hausdorff95_mm(mask, mask, (1.0, 1.0, 3.0)) == 0.0
    assert normalized_surface_dice(mask, mask, (1.0, 1.0, 3.0), tolerance_mm=0.0) == 1.0


@pytest.mark.parametrize(
    ("pred", "true", "expected"),
    [
        ([[1, 1, 0, 0]], [[0, 1, 1, 0]], 0.5),
        ([[1, 1, 1, 1]], [[1, 0, 0, 0]], 2 / 5),
        ([[1, 0], [0, 0]], [[0, 0], [0, 1]], 0.0),
        ([[True, True], [True, False]], [[True, True], [True, False]], 1.0),
    ],
)
def test_dice_on_hand_examples(pred: list, true: list, expected: float) -> None:
    assert dice(np.array(pred), np.array(true)) == pytest.approx(expected)


def test_empty_mask_conventions() -> None:
    empty = np.zeros((6, 6, 4), bool)
    blob = empty.copy()
    blob[2:4, 2:4, 1:3] = True
    spacing = (0.7, 1.3, 2.5)
    assert dice(empty, empty) == 1.0
    assert dice(blob, empty) == 0.0
    assert hausdorff95_mm(empty, empty, spacing) == 0.0
    assert hausdorff95_mm(blob, empty, spacing) == math.inf
    assert hausdorff95_mm(empty, blob, spacing) == math.inf
    assert normalized_surface_dice(empty, empty, spacing, 1.0) == 1.0
    assert normalized_surface_dice(empty, blob, spacing, 1.0) == 0.0


@pytest.mark.parametrize(
    ("pred", "true", "spacing", "message"),
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), (1.0, 1.0), "shape"),
        (np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)), (1.0, 1.0, 1.0), "channel axis"),
        (np.full((4, 4), 0.5), np.zeros((4, 4)), (1.0, 1.0), "binary"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 1.0, 1.0), "spacing"),
        (np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 0.0), "spacing"),
    ],
)
def test_bad_inputs_raise_usage_error(
    pred: np.ndarray, true: np.ndarray, spacing: tuple, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        hausdorff95_mm(pred, true, spacing)


def test_negative_tolerance_is_refused() -> None:
    mask = np.ones((3, 3), bool)
    with pytest.raises(UsageError, match="tolerance_mm"):
        normalized_surface_dice(mask, mask, (1.0, 1.0), tolerance_mm=-1.0)


def test_distance_equal_to_tolerance_counts_despite_rounding() -> None:
    """5 voxels of 0.4 mm is 2 mm on paper but 2.0000000000000004 in floating point."""
    pred = np.zeros((12, 3), bool)
    true = np.zeros((12, 3), bool)
    pred[1, :] = True
    true[6, :] = True
    assert normalized_surface_dice(pred, true, (0.4, 1.0), tolerance_mm=2.0) == 1.0
    assert normalized_surface_dice(pred, true, (0.4, 1.0), tolerance_mm=1.99) == 0.0
