"""Segmentation metrics against MedPy and MONAI themselves, a brute-force millimetre reference and hand examples.

The definitions are what matters here (issue 14): medres's pooled HD95 must equal MedPy's ``hd95``, its
MONAI-convention HD95 and its normalised surface Dice must equal MONAI's ``compute_hausdorff_distance`` and
``compute_surface_dice`` on the same masks. MONAI computes in float32, so its values are compared to float32
precision, and its surface Dice additionally through the exact fraction its float32 result rounds.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from medpy.metric.binary import hd95 as medpy_hd95
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from monai.metrics.utils import get_mask_edges
from scipy import ndimage

from medres.errors import UsageError
from medres.metrics import (
    SurfaceMetrics,
    dice,
    hausdorff95_max_directed_mm,
    hausdorff95_mm,
    mask_surface,
    normalized_surface_dice,
    surface_metrics,
)

# MONAI's own metric functions call its deprecated get_mask_edges argument; that warning is not medres's.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

# MONAI casts distances to float32 and runs torch.quantile in float32 (q = 0.95 itself rounded to float32):
# its HD95 lands up to ~12 float32 ulps (relative ~1.5e-6) from the float64 value on these shapes.
MONAI_FLOAT32_RELATIVE = 4e-6
TOLERANCES_MM = (0.0, 1.0, 2.0, 3.1)


# ---------------------------------------------------------------- seeded shapes of the kind a model gets wrong


def ellipsoid(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return sum(((grid[axis] - centre[axis]) / radii[axis]) ** 2 for axis in range(len(shape))) <= 1.0


def perturbed_pair(shape: tuple[int, ...], seed: int, at_border: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A reference ellipsoid and a prediction shifted, resized, dilated or eroded, with a few stray voxels.

    With ``at_border`` the reference is centred on the array's first corner, so both masks are cut by the border.
    """
    rng = np.random.default_rng(seed)
    dims = np.asarray(shape, float)
    centre = np.zeros(len(shape)) + 1.0 if at_border else rng.uniform(0.35, 0.65, len(shape)) * dims
    radii = rng.uniform(0.18, 0.32, len(shape)) * dims
    true = ellipsoid(shape, centre, radii)
    pred = ellipsoid(shape, centre + rng.normal(0.0, 1.5, len(shape)), radii * rng.uniform(0.8, 1.2, len(shape)))
    change = seed % 3
    if change == 0:
        pred = ndimage.binary_dilation(pred, iterations=1 + seed % 2)
    elif change == 1:
        pred = ndimage.binary_erosion(pred)
    strays = rng.integers(0, shape, size=(1 + seed % 4, len(shape)))
    pred[tuple(strays.T)] = True
    return pred, true


def single_voxel(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[index] = True
    return mask


def comparison_cases() -> Iterator:
    """Random anisotropic 3D and 2D pairs, border-cut pairs, a full-array mask and single-voxel masks."""
    for seed in range(4):
        yield pytest.param(*perturbed_pair((30, 26, 12), seed), (0.7, 0.9, 2.5), id=f"3d-ellipsoids-{seed}")
    yield pytest.param(*perturbed_pair((24, 24, 14), 4), (2.0, 0.5, 1.0), id="3d-ellipsoids-other-spacing")
    for seed in range(5, 8):
        yield pytest.param(*perturbed_pair((48, 40), seed), (0.7, 1.9), id=f"2d-ellipsoids-{seed}")
    yield pytest.param(*perturbed_pair((28, 24, 12), 8, at_border=True), (0.7, 0.9, 2.5), id="3d-touching-border")
    yield pytest.param(*perturbed_pair((40, 36), 9, at_border=True), (0.7, 1.9), id="2d-touching-border")
    blob = ellipsoid((20, 18, 10), np.array([10.0, 9.0, 5.0]), np.array([6.0, 5.0, 3.0]))
    yield pytest.param(np.ones((20, 18, 10), bool), blob, (0.7, 0.9, 2.5), id="3d-whole-array-vs-blob")
    yield pytest.param(single_voxel((20, 18, 10), (3, 15, 8)), blob, (0.7, 0.9, 2.5), id="3d-single-voxel-vs-blob")
    yield pytest.param(
        single_voxel((20, 18, 10), (0, 0, 0)), single_voxel((20, 18, 10), (4, 17, 9)), (0.7, 0.9, 2.5),
        id="3d-single-voxels-in-corners",
    )
    disc = ellipsoid((30, 24), np.array([15.0, 12.0]), np.array([8.0, 6.0]))
    yield pytest.param(single_voxel((30, 24), (29, 0)), disc, (0.7, 1.9), id="2d-single-voxel-on-border")


CASES = list(comparison_cases())


def one_hot(mask: np.ndarray) -> torch.Tensor:
    """MONAI's layout: batch of one, background and foreground channels."""
    return torch.as_tensor(np.stack([~mask, mask])[None].astype(np.float32))


# ---------------------------------------------------------------- against MedPy and MONAI


@pytest.mark.parametrize(("pred", "true", "spacing"), CASES)
def test_pooled_hd95_equals_medpy(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> None:
    expected = medpy_hd95(pred, true, voxelspacing=spacing)
    assert hausdorff95_mm(pred, true, spacing) == pytest.approx(expected, abs=1e-6, rel=0)


@pytest.mark.parametrize(("pred", "true", "spacing"), CASES)
def test_max_directed_hd95_equals_monai(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> None:
    expected = compute_hausdorff_distance(one_hot(pred), one_hot(true), percentile=95, spacing=spacing).item()
    assert hausdorff95_max_directed_mm(pred, true, spacing) == pytest.approx(
        expected, abs=1e-6, rel=MONAI_FLOAT32_RELATIVE
    )


@pytest.mark.parametrize(("pred", "true", "spacing"), CASES)
def test_surface_equals_monai_mask_edges(pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Voxel for voxel, on the uncropped arrays, so masks cut by the array border are covered too."""
    monai_pred_edges, monai_true_edges = get_mask_edges(pred, true, crop=False)
    np.testing.assert_array_equal(mask_surface(pred), monai_pred_edges)
    np.testing.assert_array_equal(mask_surface(true), monai_true_edges)


@pytest.mark.parametrize(("pred", "true", "spacing"), CASES)
@pytest.mark.parametrize("tolerance_mm", TOLERANCES_MM)
def test_surface_dice_equals_monai(
    pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float
) -> None:
    monai_value = compute_surface_dice(one_hot(pred), one_hot(true), [tolerance_mm], spacing=spacing).item()
    # MONAI returns float32; its denominator is the number of surface voxels of both masks, so the exact
    # fraction it rounded is recovered by rounding the numerator to the nearest integer.
    surface_voxels = sum(int(edges.sum()) for edges in get_mask_edges(pred, true))
    monai_exact = round(monai_value * surface_voxels) / surface_voxels
    value = normalized_surface_dice(pred, true, spacing, tolerance_mm)
    assert value == pytest.approx(monai_exact, abs=1e-9, rel=0)
    assert value == pytest.approx(monai_value, abs=1e-7, rel=0)


@pytest.mark.parametrize(("pred", "true", "spacing"), CASES[:3] + CASES[-3:])
def test_surface_metrics_equal_the_single_functions(
    pred: np.ndarray, true: np.ndarray, spacing: tuple[float, ...]
) -> None:
    assert surface_metrics(pred, true, spacing, 2.0) == SurfaceMetrics(
        hd95_mm=hausdorff95_mm(pred, true, spacing),
        hd95_max_directed_mm=hausdorff95_max_directed_mm(pred, true, spacing),
        nsd=normalized_surface_dice(pred, true, spacing, 2.0),
        tolerance_mm=2.0,
    )


def test_face_connected_surface_is_what_makes_hd95_equal_medpy() -> None:
    """The old full-connectivity surface gave a visibly smaller HD95 than MedPy on this case; a regression guard."""
    pred, true = perturbed_pair((30, 26, 12), seed=2)  # the case "3d-ellipsoids-2": 1.66 mm before, 2.28 mm now
    spacing = (0.7, 0.9, 2.5)
    full = ndimage.generate_binary_structure(3, 3)
    thick_pred = pred & ~ndimage.binary_erosion(pred, full)
    thick_true = true & ~ndimage.binary_erosion(true, full)
    to_true = ndimage.distance_transform_edt(~thick_true, sampling=spacing)[thick_pred]
    to_pred = ndimage.distance_transform_edt(~thick_pred, sampling=spacing)[thick_true]
    old_hd95 = np.percentile(np.concatenate([to_true, to_pred]), 95)
    assert medpy_hd95(pred, true, voxelspacing=spacing) - old_hd95 > 0.5
    assert hausdorff95_mm(pred, true, spacing) == pytest.approx(medpy_hd95(pred, true, voxelspacing=spacing))


# ---------------------------------------------------------------- empty masks: medres's stated conventions


def test_empty_mask_conventions() -> None:
    empty = np.zeros((6, 6, 4), bool)
    blob = empty.copy()
    blob[2:4, 2:4, 1:3] = True
    spacing = (0.7, 1.3, 2.5)
    assert dice(empty, empty) == 1.0
    assert dice(blob, empty) == 0.0
    for hd95 in (hausdorff95_mm, hausdorff95_max_directed_mm):
        assert hd95(empty, empty, spacing) == 0.0
        assert hd95(blob, empty, spacing) == math.inf
        assert hd95(empty, blob, spacing) == math.inf
    assert normalized_surface_dice(empty, empty, spacing, 1.0) == 1.0
    assert normalized_surface_dice(empty, blob, spacing, 1.0) == 0.0
    assert normalized_surface_dice(blob, empty, spacing, 1.0) == 0.0
    assert surface_metrics(blob, empty, spacing, 1.0) == SurfaceMetrics(math.inf, math.inf, 0.0, 1.0)
    assert surface_metrics(empty, empty, spacing, 1.0) == SurfaceMetrics(0.0, 0.0, 1.0, 1.0)


def test_what_medpy_and_monai_do_with_empty_masks() -> None:
    """The tools' own behaviour, as the module docstring states it: MedPy raises, MONAI gives nan (NSD 0 for one)."""
    empty = np.zeros((6, 6, 4), bool)
    blob = empty.copy()
    blob[2:4, 2:4, 1:3] = True
    spacing = (0.7, 1.3, 2.5)
    for pred, true in ((empty, blob), (blob, empty), (empty, empty)):
        with pytest.raises(RuntimeError):
            medpy_hd95(pred, true, voxelspacing=spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd95 = {
            name: compute_hausdorff_distance(one_hot(p), one_hot(t), percentile=95, spacing=spacing).item()
            for name, (p, t) in {"both": (empty, empty), "pred": (empty, blob), "true": (blob, empty)}.items()
        }
        monai_nsd = {
            name: compute_surface_dice(one_hot(p), one_hot(t), [1.0], spacing=spacing).item()
            for name, (p, t) in {"both": (empty, empty), "pred": (empty, blob), "true": (blob, empty)}.items()
        }
    assert all(math.isnan(value) for value in monai_hd95.values())
    assert math.isnan(monai_nsd["both"])
    assert monai_nsd["pred"] == monai_nsd["true"] == normalized_surface_dice(empty, blob, spacing, 1.0) == 0.0


# ---------------------------------------------------------------- DeepMind's surfel-area definition, where installed


def test_difference_from_deepmind_surface_distance_on_a_stated_case() -> None:
    """DeepMind's ``surface-distance`` weights surfels by area, so its NSD differs from voxel counting.

    The case: reference ellipsoid centred (24, 20, 10), radii (14, 11, 5) voxels; prediction centred
    (25.5, 19, 10.4), radii (15, 10, 5.5); 48 x 40 x 20 voxels of 0.7 x 0.9 x 2.5 mm. The package is not a test
    dependency; this runs where it is installed.
    """
    surface_distance = pytest.importorskip("surface_distance")
    shape, spacing = (48, 40, 20), (0.7, 0.9, 2.5)
    true = ellipsoid(shape, np.array([24.0, 20.0, 10.0]), np.array([14.0, 11.0, 5.0]))
    pred = ellipsoid(shape, np.array([25.5, 19.0, 10.4]), np.array([15.0, 10.0, 5.5]))
    distances = surface_distance.compute_surface_distances(true, pred, spacing)
    for tolerance_mm, medres_nsd, deepmind_nsd in ((1.0, 0.6223, 0.7338), (2.0, 0.8614, 0.9323)):
        assert normalized_surface_dice(pred, true, spacing, tolerance_mm) == pytest.approx(medres_nsd, abs=1e-4)
        assert surface_distance.compute_surface_dice_at_tolerance(distances, tolerance_mm) == pytest.approx(
            deepmind_nsd, abs=1e-4
        )


# ---------------------------------------------------------------- brute force: millimetres and cropping


def brute_force_surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with any of their 2d face neighbours in the background (outside = background).

    Written with padding and shifts, independently of scipy's erosion.
    """
    padded = np.pad(mask, 1, constant_values=False)
    all_faces_foreground = np.ones_like(mask)
    for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
        window = tuple(
            slice(1 + (step if a == axis else 0), 1 + (step if a == axis else 0) + size)
            for a, size in enumerate(mask.shape)
        )
        all_faces_foreground &= padded[window]
    return mask & ~all_faces_foreground


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


BLOB_CASES = [
    pytest.param((14, 12, 9), (0.7, 1.3, 2.5), 0, id="3d-anisotropic-a"),
    pytest.param((10, 16, 7), (0.7, 1.3, 2.5), 1, id="3d-anisotropic-b"),
    pytest.param((9, 9, 9), (2.0, 0.5, 1.0), 2, id="3d-anisotropic-c"),
    pytest.param((30, 25), (0.4, 1.7), 3, id="2d-anisotropic"),
    pytest.param((20, 20), (1.0, 1.0), 4, id="2d-isotropic"),
]


@pytest.mark.parametrize(("shape", "spacing", "seed"), BLOB_CASES)
def test_both_hd95_conventions_equal_brute_force(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int
) -> None:
    pred, true = random_blobs(shape, seed), random_blobs(shape, seed + 100)
    pred_to_true, true_to_pred = brute_force_directed_distances(pred, true, spacing)
    pooled = np.percentile(np.concatenate([pred_to_true, true_to_pred]), 95)
    max_directed = max(np.percentile(pred_to_true, 95), np.percentile(true_to_pred, 95))
    assert hausdorff95_mm(pred, true, spacing) == pytest.approx(pooled, rel=1e-12)
    assert hausdorff95_max_directed_mm(pred, true, spacing) == pytest.approx(max_directed, rel=1e-12)


@pytest.mark.parametrize(("shape", "spacing", "seed"), BLOB_CASES)
@pytest.mark.parametrize("tolerance_mm", TOLERANCES_MM)
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
    assert hausdorff95_max_directed_mm(pred, true, (0.7, 1.3, 2.5)) == pytest.approx(7.5)
    assert normalized_surface_dice(pred, true, (0.7, 1.3, 2.5), tolerance_mm=7.4) == 0.0
    assert normalized_surface_dice(pred, true, (0.7, 1.3, 2.5), tolerance_mm=7.5) == 1.0


def test_pooled_and_max_directed_differ_when_one_direction_is_worse() -> None:
    """One stray voxel 34 mm away: the pooled percentile dilutes it, the directed one does not.

    The reference (rows 2-5, 3 columns, 1 mm) has 10 surface voxels; the prediction adds a voxel at row 39, so
    pred -> truth is ten 0s and one 34 (95th percentile 17) and truth -> pred is ten 0s (pooled: 0).
    """
    true = np.zeros((40, 3), bool)
    true[2:6, :] = True
    pred = true.copy()
    pred[39, 1] = True
    assert hausdorff95_mm(pred, true, (1.0, 1.0)) == 0.0 == medpy_hd95(pred, true, voxelspacing=(1.0, 1.0))
    assert hausdorff95_max_directed_mm(pred, true, (1.0, 1.0)) == 17.0


def test_identical_masks_are_perfect() -> None:
    mask = random_blobs((12, 12, 6), seed=9)
    assert dice(mask, mask) == 1.0
    assert hausdorff95_mm(mask, mask, (1.0, 1.0, 3.0)) == 0.0
    assert hausdorff95_max_directed_mm(mask, mask, (1.0, 1.0, 3.0)) == 0.0
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


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("metric", [hausdorff95_mm, hausdorff95_max_directed_mm])
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
    metric: object, pred: np.ndarray, true: np.ndarray, spacing: tuple, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        metric(pred, true, spacing)  # type: ignore[operator]


@pytest.mark.parametrize("tolerance_mm", [-1.0, math.inf, math.nan])
def test_bad_tolerance_is_refused(tolerance_mm: float) -> None:
    mask = np.ones((3, 3), bool)
    with pytest.raises(UsageError, match="tolerance_mm"):
        normalized_surface_dice(mask, mask, (1.0, 1.0), tolerance_mm=tolerance_mm)
    with pytest.raises(UsageError, match="tolerance_mm"):
        surface_metrics(mask, mask, (1.0, 1.0), tolerance_mm=tolerance_mm)


def test_distance_equal_to_tolerance_counts_despite_rounding() -> None:
    """5 voxels of 0.4 mm is 2 mm on paper but 2.0000000000000004 in floating point."""
    pred = np.zeros((12, 3), bool)
    true = np.zeros((12, 3), bool)
    pred[1, :] = True
    true[6, :] = True
    assert normalized_surface_dice(pred, true, (0.4, 1.0), tolerance_mm=2.0) == 1.0
    assert normalized_surface_dice(pred, true, (0.4, 1.0), tolerance_mm=1.99) == 0.0
    monai_value = compute_surface_dice(one_hot(pred), one_hot(true), [2.0], spacing=(0.4, 1.0)).item()
    assert monai_value == 1.0

