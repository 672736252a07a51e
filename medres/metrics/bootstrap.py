"""Patient-level (cluster) bootstrap intervals of AUROC and AUPRC.

Images of one patient are far more alike than images of two patients, so the
default resamples patients and keeps all of each drawn patient's images. A
resample is the original images with integer multiplicities, so replicates of
AUROC and AUPRC use an equivalent weighted rank formulation instead of calling
scikit-learn a thousand times; the point estimates stay scikit-learn's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from medres.errors import UsageError
from medres.metrics.classification import (
    MetricFunction,
    MetricUndefinedWarning,
    compute_auprc,
    compute_auroc,
    label_is_defined,
    mean_of_defined,
    validated_pair,
)

# Replicates evaluated together: bounds memory to a few arrays of 8 bytes x n_images x 64.
_REPLICATES_PER_CHUNK = 64



@dataclass(frozen=True)
class BootstrapInterval:
    """A point estimate with its percentile bootstrap interval.

    Attributes:
        estimate: The metric on all images (NaN if undefined).
        lower: Lower percentile of the replicates (NaN if no replicate was usable).
        upper: Upper percentile of the replicates.
        n_replicates_used: Replicates where the metric was defined; the others were skipped.
    """

    estimate: float
    lower: float
    upper: float
    n_replicates_used: int


@dataclass(frozen=True)
class MultiLabelBootstrapInterval:
    """Intervals of every label, and of the mean over labels computed within each replicate."""

    per_label: tuple[BootstrapInterval, ...]
    mean: BootstrapInterval


def bootstrap_ci(
    y_true: ArrayLike,
    y_score: ArrayLike,
    groups: ArrayLike | None,
    metric: MetricFunction = compute_auroc,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval | MultiLabelBootstrapInterval:
    """Percentile bootstrap interval of a metric, resampling patients rather than images.

    Each replicate draws as many patients as there are, with replacement, and
    takes every image of each drawn patient, so the interval reflects how
    results would vary over a new set of patients. ``groups`` is required (it
    may be None) so that callers decide consciously; None, or a distinct value
    per image, gives the ordinary image-level bootstrap. Replicates where a
    label has a single class are skipped for that label and counted in
    ``n_replicates_used``. :func:`compute_auroc` and :func:`compute_auprc` use a
    fast weighted-rank path; any other metric is called once per replicate.

    Args:
        y_true: 0/1 labels, ``(n_images,)`` or ``(n_images, n_labels)``.
        y_score: Scores, same shape.
        groups: Patient id of each image (any hashable values), or None.
        metric: ``metric(y_true_1d, y_score_1d) -> float``.
        n_boot: Number of replicates.
        confidence: Coverage of the interval, e.g. 0.95.
        seed: Seed of the replicate draws; the same seed gives the same interval.

    Returns:
        A :class:`BootstrapInterval` for 1D input; for 2D input a
        :class:`MultiLabelBootstrapInterval` whose mean is over the labels defined in each replicate.
    """
    truth, scores = validated_pair(y_true, y_score, ndims=(1, 2))
    check_bootstrap_settings(n_boot, confidence)
    group_index, n_groups = patient_group_index(groups, truth.shape[0])
    truth_2d, scores_2d = truth.reshape(truth.shape[0], -1), scores.reshape(scores.shape[0], -1)
    estimates = [
        float(metric(truth_2d[:, column], scores_2d[:, column]))
        if label_is_defined(truth_2d[:, column], None if truth.ndim == 1 else f"column {column}")
        else math.nan
        for column in range(truth_2d.shape[1])
    ]
    result = bootstrap_intervals(
        truth_2d, scores_2d, group_index, n_groups, metric, estimates, n_boot, confidence, seed
    )
    return result.per_label[0] if truth.ndim == 1 else result


def check_bootstrap_settings(n_boot: int, confidence: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise UsageError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


def patient_group_index(groups: ArrayLike | None, n_images: int) -> tuple[np.ndarray, int]:
    """Map each image to a patient number 0..n_groups-1; None makes every image its own patient."""
    if groups is None:
        return np.arange(n_images), n_images
    values = np.asarray(groups)
    if values.shape != (n_images,):
        raise UsageError(f"groups must hold one patient id per image ({n_images}), got shape {values.shape}")
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise UsageError("groups has missing patient ids (NaN); give every image its patient's id")
    try:
        unique, index = np.unique(values, return_inverse=True)
    except TypeError as error:  # e.g. None or a mix of strings and numbers
        raise UsageError("patient ids in groups must be all strings or all numbers, none missing") from error
    return index.reshape(-1), len(unique)


def bootstrap_intervals(
    truth: np.ndarray,
    scores: np.ndarray,
    group_index: np.ndarray,
    n_groups: int,
    metric: MetricFunction,
    estimates: Sequence[float],
    n_boot: int,
    confidence: float,
    seed: int,
) -> MultiLabelBootstrapInterval:
    """Replicate values of every label (NaN when skipped), turned into percentile intervals."""
    fast_kernel = _FAST_REPLICATE_KERNELS.get(metric)
    rng = np.random.default_rng(seed)
    chunks = []
    if fast_kernel is not None:
        ranked = [
            _RankedLabel.build(truth[:, column], scores[:, column], group_index)
            for column in range(truth.shape[1])
        ]
        for counts in _resampled_patient_counts(rng, n_groups, n_boot):
            chunks.append(np.column_stack([fast_kernel(label, counts) for label in ranked]))
    else:
        for counts in _resampled_patient_counts(rng, n_groups, n_boot):
            chunks.append(_replicates_by_calling(metric, truth, scores, counts[:, group_index]))
    replicates = np.concatenate(chunks)
    per_label = tuple(
        _percentile_interval(replicates[:, column], estimates[column], confidence)
        for column in range(truth.shape[1])
    )
    defined = ~np.isnan(replicates)
    n_defined = defined.sum(axis=1)
    replicate_means = np.where(defined, replicates, 0.0).sum(axis=1) / np.maximum(n_defined, 1)
    replicate_means[n_defined == 0] = math.nan
    mean = _percentile_interval(replicate_means, mean_of_defined(estimates), confidence)
    return MultiLabelBootstrapInterval(per_label, mean)


def _resampled_patient_counts(rng: np.random.Generator, n_groups: int, n_boot: int) -> Iterator[np.ndarray]:
    """Yield ``(chunk, n_groups)`` integer arrays: how often each patient is drawn in each replicate."""
    for start in range(0, n_boot, _REPLICATES_PER_CHUNK):
        n_replicates = min(_REPLICATES_PER_CHUNK, n_boot - start)
        drawn = rng.integers(0, n_groups, size=(n_replicates, n_groups))
        flat = (drawn + (np.arange(n_replicates) * n_groups)[:, None]).ravel()
        yield np.bincount(flat, minlength=n_replicates * n_groups).reshape(n_replicates, n_groups)


def _replicates_by_calling(
    metric: MetricFunction, truth: np.ndarray, scores: np.ndarray, image_counts: np.ndarray
) -> np.ndarray:
    """Generic path: materialise each resample as an index array and call ``metric`` on it."""
    values = np.full((image_counts.shape[0], truth.shape[1]), math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        for replicate, counts in enumerate(image_counts):
            indices = np.repeat(np.arange(truth.shape[0]), counts)
            for column in range(truth.shape[1]):
                label_truth = truth[indices, column]
                if 0 < label_truth.sum() < label_truth.size:
                    values[replicate, column] = metric(label_truth, scores[indices, column])
    return values


@dataclass(frozen=True)
class _RankedLabel:
    """One label's images arranged so a replicate's AUROC/AUPRC is a few gathers and cumsums.

    Positives and negatives are each sorted by descending score and stored as
    their patients' numbers; a replicate weights every image by how often its
    patient was drawn. For each positive we precompute how many negatives score
    above it, how many score at least as high, and how many positives score at
    least as high; ties then fall on the same cumulative counts, as in sklearn.
    """

    positive_patients: np.ndarray
    negative_patients: np.ndarray
    negatives_above: np.ndarray
    negatives_at_or_above: np.ndarray
    positives_at_or_above: np.ndarray

    @classmethod
    def build(cls, truth: np.ndarray, scores: np.ndarray, group_index: np.ndarray) -> _RankedLabel:
        positive_order = np.argsort(-scores[truth == 1], kind="stable")
        negative_order = np.argsort(-scores[truth == 0], kind="stable")
        positive_scores = scores[truth == 1][positive_order]
        negative_ascending = np.sort(scores[truth == 0])
        positive_ascending = positive_scores[::-1]

        def count_at_least(ascending: np.ndarray, strictly: bool) -> np.ndarray:
            side = "right" if strictly else "left"
            return ascending.size - np.searchsorted(ascending, positive_scores, side=side)

        return cls(
            positive_patients=group_index[truth == 1][positive_order],
            negative_patients=group_index[truth == 0][negative_order],
            negatives_above=count_at_least(negative_ascending, strictly=True),
            negatives_at_or_above=count_at_least(negative_ascending, strictly=False),
            positives_at_or_above=count_at_least(positive_ascending, strictly=False),
        )

    def weights(self, patient_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per replicate: each positive's weight, and cumulative negative weight (leading 0) by rank."""
        positive_weights = np.take(patient_counts, self.positive_patients, axis=1)
        negative_weights = np.take(patient_counts, self.negative_patients, axis=1)
        return positive_weights, _cumulative_with_zero(negative_weights)


def _cumulative_with_zero(weights: np.ndarray) -> np.ndarray:
    cumulative = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=weights.dtype)
    np.cumsum(weights, axis=1, out=cumulative[:, 1:])
    return cumulative


def _fast_auroc(label: _RankedLabel, patient_counts: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC of each replicate in integer arithmetic; a tied pair counts one half."""
    positive_weights, negatives_cumulative = label.weights(patient_counts)
    total_negative = negatives_cumulative[:, -1:]
    above = negatives_cumulative[:, label.negatives_above]
    at_or_above = negatives_cumulative[:, label.negatives_at_or_above]
    twice_concordant = (positive_weights * (2 * total_negative - above - at_or_above)).sum(axis=1)
    twice_pairs = 2 * positive_weights.sum(axis=1) * total_negative[:, 0]
    undefined = np.full(twice_pairs.shape, math.nan)
    return np.divide(twice_concordant, twice_pairs, out=undefined, where=twice_pairs > 0)


def _fast_average_precision(label: _RankedLabel, patient_counts: np.ndarray) -> np.ndarray:
    """sklearn's average precision of each replicate: each positive adds the precision at its score."""
    positive_weights, negatives_cumulative = label.weights(patient_counts)
    true_positives = _cumulative_with_zero(positive_weights)[:, label.positives_at_or_above]
    false_positives = negatives_cumulative[:, label.negatives_at_or_above]
    called_positive = true_positives + false_positives
    precision = np.zeros(called_positive.shape)
    np.divide(true_positives, called_positive, out=precision, where=called_positive > 0)
    total_positive, total_negative = positive_weights.sum(axis=1), negatives_cumulative[:, -1]
    gained = (positive_weights * precision).sum(axis=1)
    defined = (total_positive > 0) & (total_negative > 0)
    return np.divide(gained, total_positive, out=np.full(gained.shape, math.nan), where=defined)


_FAST_REPLICATE_KERNELS: dict[Callable[..., float], Callable[[_RankedLabel, np.ndarray], np.ndarray]] = {
    compute_auroc: _fast_auroc,
    compute_auprc: _fast_average_precision,
}


def _percentile_interval(replicates: np.ndarray, estimate: float, confidence: float) -> BootstrapInterval:
    used = replicates[~np.isnan(replicates)]
    if used.size == 0:
        return BootstrapInterval(estimate, math.nan, math.nan, 0)
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(used, [tail, 1.0 - tail])
    return BootstrapInterval(estimate, float(lower), float(upper), int(used.size))
