"""Classification metrics for multi-label chest X-ray models, with honest intervals.

ChestX-ray14 holds many images per patient, and images of one patient are far
more alike than images of two patients. An image-level bootstrap treats them as
independent and gives intervals that are too narrow, so the default here is the
cluster bootstrap: resample patients, keep all of each drawn patient's images.

Point estimates are scikit-learn's (``roc_auc_score``, ``average_precision_score``)
so numbers match what reviewers compute. Bootstrap replicates of AUROC and AUPRC
use an equivalent weighted rank formulation, because a resample is just the
original images with integer multiplicities; this makes 14 labels x 1000
replicates x 25k images take seconds instead of minutes.

A metric is *undefined* when a label has only one class (no positives, or no
negatives): it is NaN and a :class:`MetricUndefinedWarning` says so, and means
over labels skip it instead of silently turning into NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from medres.errors import UsageError

MetricFunction = Callable[[np.ndarray, np.ndarray], float]

# Replicates evaluated together: bounds memory to a few arrays of 8 bytes x n_images x 64.
_REPLICATES_PER_CHUNK = 64


class MetricUndefinedWarning(UserWarning):
    """A metric was NaN because a label has a single class (only positives or only negatives)."""


# --------------------------------------------------------------------------- validation


def _validated_pair(
    y_true: ArrayLike, y_score: ArrayLike, ndims: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels as int8 and finite scores as float64, with matching shapes."""
    truth = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    if truth.shape != scores.shape:
        raise UsageError(
            f"y_true has shape {truth.shape} but y_score has shape {scores.shape}; they must match"
        )
    if truth.ndim not in ndims or truth.size == 0:
        expected = " or ".join(f"{n}D" for n in ndims)
        raise UsageError(
            f"expected non-empty {expected} arrays (n_images[, n_labels]), got shape {truth.shape}"
        )
    if not np.isin(truth, (0, 1)).all():
        raise UsageError(
            "y_true must hold only 0 and 1 (or booleans); map uncertain labels before evaluating"
        )
    if not np.isfinite(scores).all():
        raise UsageError("y_score holds NaN or infinite values; score every image before evaluating")
    return truth.astype(np.int8), scores


def _validated_labels(labels: Sequence[str], n_columns: int) -> list[str]:
    names = [str(label) for label in labels]
    if len(names) != n_columns or len(set(names)) != len(names):
        raise UsageError(
            f"labels must be {n_columns} unique names, one per column; got {len(names)}: {names}"
        )
    return names


def _label_is_defined(truth: np.ndarray, label: str | None = None) -> bool:
    """False (with a warning naming the label) when ``truth`` holds a single class."""
    n_positive = int(truth.sum())
    if 0 < n_positive < truth.size:
        return True
    which = "" if label is None else f" for label {label!r}"
    present = "positives" if n_positive else "negatives"
    warnings.warn(
        f"AUROC/AUPRC are undefined{which}: y_true holds only {present} ({truth.size} images); reporting NaN",
        MetricUndefinedWarning,
        stacklevel=3,
    )
    return False


def _mean_of_defined(values: Sequence[float]) -> float:
    """Mean over non-NaN values, NaN when there are none (and no RuntimeWarning)."""
    defined = [value for value in values if not math.isnan(value)]
    return float(np.mean(defined)) if defined else math.nan


# --------------------------------------------------------------------------- point metrics


def compute_auroc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve of one label, exactly ``sklearn.metrics.roc_auc_score``.

    Args:
        y_true: 0/1 labels, shape ``(n_images,)``.
        y_score: Scores of any monotone scale (logits or probabilities).

    Returns:
        The AUROC, or NaN with a :class:`MetricUndefinedWarning` when only one class is present.
    """
    truth, scores = _validated_pair(y_true, y_score, ndims=(1,))
    return float(roc_auc_score(truth, scores)) if _label_is_defined(truth) else math.nan


def compute_auprc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the precision-recall curve, exactly ``sklearn.metrics.average_precision_score``.

    Average precision (step-wise, no interpolation) rather than the trapezoidal
    area, which is optimistic for rare labels.

    Args:
        y_true: 0/1 labels, shape ``(n_images,)``.
        y_score: Scores of any monotone scale.

    Returns:
        The AUPRC, or NaN with a :class:`MetricUndefinedWarning` when only one class is present.
    """
    truth, scores = _validated_pair(y_true, y_score, ndims=(1,))
    return float(average_precision_score(truth, scores)) if _label_is_defined(truth) else math.nan


def per_label_metrics(y_true: ArrayLike, y_score: ArrayLike, labels: Sequence[str]) -> dict[str, Any]:
    """AUROC and AUPRC of every label, and their means over the labels where they are defined.

    Args:
        y_true: 0/1 labels, shape ``(n_images, n_labels)``.
        y_score: Scores, same shape.
        labels: Label names in column order.

    Returns:
        ``{"per_label": {name: {"auroc", "auprc"}}, "mean_auroc", "mean_auprc"}``; undefined
        labels are NaN (one warning each) and left out of the means.
    """
    truth, scores = _validated_pair(y_true, y_score, ndims=(2,))
    names = _validated_labels(labels, truth.shape[1])
    per_label: dict[str, dict[str, float]] = {}
    for column, name in enumerate(names):
        label_truth, label_scores = truth[:, column], scores[:, column]
        if _label_is_defined(label_truth, name):
            per_label[name] = {
                "auroc": float(roc_auc_score(label_truth, label_scores)),
                "auprc": float(average_precision_score(label_truth, label_scores)),
            }
        else:
            per_label[name] = {"auroc": math.nan, "auprc": math.nan}
    return {
        "per_label": per_label,
        "mean_auroc": _mean_of_defined([entry["auroc"] for entry in per_label.values()]),
        "mean_auprc": _mean_of_defined([entry["auprc"] for entry in per_label.values()]),
    }


# --------------------------------------------------------------------------- bootstrap


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
    truth, scores = _validated_pair(y_true, y_score, ndims=(1, 2))
    _check_bootstrap_settings(n_boot, confidence)
    group_index, n_groups = _group_index(groups, truth.shape[0])
    truth_2d, scores_2d = truth.reshape(truth.shape[0], -1), scores.reshape(scores.shape[0], -1)
    estimates = [
        float(metric(truth_2d[:, column], scores_2d[:, column]))
        if _label_is_defined(truth_2d[:, column], None if truth.ndim == 1 else f"column {column}")
        else math.nan
        for column in range(truth_2d.shape[1])
    ]
    result = _bootstrap_intervals(
        truth_2d, scores_2d, group_index, n_groups, metric, estimates, n_boot, confidence, seed
    )
    return result.per_label[0] if truth.ndim == 1 else result


def _check_bootstrap_settings(n_boot: int, confidence: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise UsageError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


def _group_index(groups: ArrayLike | None, n_images: int) -> tuple[np.ndarray, int]:
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


def _bootstrap_intervals(
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
    mean = _percentile_interval(replicate_means, _mean_of_defined(estimates), confidence)
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


# --------------------------------------------------------------------------- calibration


class ReliabilityCurve(NamedTuple):
    """Per-bin reliability-diagram data over equal-width bins on [0, 1] (NaN in empty bins)."""

    mean_predicted: np.ndarray
    observed_fraction: np.ndarray
    counts: np.ndarray


def reliability_curve(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> ReliabilityCurve:
    """Mean predicted probability, observed positive fraction and image count per bin.

    Bins are ``[k/n_bins, (k+1)/n_bins)``, the last one closed; every bin is
    returned (empty ones NaN) so curves of different models line up.

    Args:
        y_true: 0/1 labels, shape ``(n_images,)``.
        y_prob: Probabilities in [0, 1] (not logits).
        n_bins: Number of equal-width bins.
    """
    truth, probabilities = _validated_pair(y_true, y_prob, ndims=(1,))
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise UsageError("y_prob must be probabilities in [0, 1]; apply a sigmoid to logits first")
    if int(n_bins) != n_bins or n_bins < 1:
        raise UsageError(f"n_bins must be a positive integer, got {n_bins!r}")
    bin_index = np.minimum((probabilities * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bin_index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(bin_index, weights=probabilities, minlength=n_bins) / counts
        observed_fraction = np.bincount(bin_index, weights=truth, minlength=n_bins) / counts
    return ReliabilityCurve(mean_predicted, observed_fraction, counts)


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> float:
    """Image-weighted mean gap between predicted probability and observed frequency per bin.

    ``sum_b (n_b / n) * |mean_predicted_b - observed_fraction_b|`` over the
    non-empty bins of :func:`reliability_curve`; 0 means the probabilities can
    be read as frequencies, which matters when thresholds or risk are shown.
    """
    curve = reliability_curve(y_true, y_prob, n_bins)
    filled = curve.counts > 0
    gaps = np.abs(curve.mean_predicted[filled] - curve.observed_fraction[filled])
    return float(np.sum(curve.counts[filled] * gaps) / curve.counts.sum())


# --------------------------------------------------------------------------- thresholds


def choose_thresholds(
    y_true: ArrayLike, y_score: ArrayLike, labels: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Operating points per label, for a model card's per-class thresholds.

    ``youden`` maximises sensitivity + specificity - 1 over the ROC curve's
    thresholds (ties go to the highest threshold, the more specific one);
    ``sensitivity_90`` is the highest threshold whose sensitivity is at least
    0.90, the usual screening constraint. An image is positive when its score
    is ``>=`` the threshold, as in ``sklearn.metrics.roc_curve``.

    Args:
        y_true: 0/1 labels, ``(n_images,)`` or ``(n_images, n_labels)``.
        y_score: Scores, same shape.
        labels: Label names in column order; defaults to ``"0"``, ``"1"``, ...

    Returns:
        ``{label: {"youden": t, "sensitivity_90": t}}``; NaN for undefined labels.
    """
    truth, scores = _validated_pair(y_true, y_score, ndims=(1, 2))
    truth, scores = truth.reshape(truth.shape[0], -1), scores.reshape(scores.shape[0], -1)
    default_labels = [str(column) for column in range(truth.shape[1])]
    names = _validated_labels(default_labels if labels is None else labels, truth.shape[1])
    thresholds: dict[str, dict[str, float]] = {}
    for column, name in enumerate(names):
        if not _label_is_defined(truth[:, column], name):
            thresholds[name] = {"youden": math.nan, "sensitivity_90": math.nan}
            continue
        false_positive_rate, true_positive_rate, cutoffs = roc_curve(
            truth[:, column], scores[:, column], drop_intermediate=False
        )
        youden_index = (true_positive_rate - false_positive_rate)[1:]  # [0] is the "nobody positive" point
        thresholds[name] = {
            "youden": float(cutoffs[1:][np.argmax(youden_index)]),
            "sensitivity_90": float(cutoffs[np.argmax(true_positive_rate >= 0.90)]),
        }
    return thresholds


# --------------------------------------------------------------------------- summary


def classification_summary(
    y_true: ArrayLike,
    y_score: ArrayLike,
    labels: Sequence[str],
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Everything an evaluation report needs, as one JSON-serialisable dict.

    AUROC and AUPRC intervals share the same replicates (same seed). ECE is
    reported only when scores are probabilities in [0, 1]; undefined values
    are ``None`` so the dict passes ``json.dumps(..., allow_nan=False)``.

    Args:
        y_true: 0/1 labels, ``(n_images, n_labels)``.
        y_score: Scores (ideally probabilities), same shape.
        labels: Label names in column order.
        groups: Patient id per image for the patient-level bootstrap; None for image-level.
        n_boot: Bootstrap replicates.
        seed: Seed of the replicate draws.
        confidence: Coverage of the intervals.

    Returns:
        ``{"per_label": {name: {auroc, auroc_ci, auprc, auprc_ci, n_positive, n_negative, ece}},
        "mean_auroc", "mean_auroc_ci", "mean_auprc", "mean_auprc_ci", "ci_method", ...}``.
    """
    truth, scores = _validated_pair(y_true, y_score, ndims=(2,))
    _check_bootstrap_settings(n_boot, confidence)
    point = per_label_metrics(truth, scores, labels)
    names = list(point["per_label"])
    group_index, n_groups = _group_index(groups, truth.shape[0])
    intervals = {
        metric_name: _bootstrap_intervals(
            truth, scores, group_index, n_groups, metric,
            [point["per_label"][name][metric_name] for name in names], n_boot, confidence, seed,
        )
        for metric_name, metric in (("auroc", compute_auroc), ("auprc", compute_auprc))
    }
    are_probabilities = bool(scores.min() >= 0 and scores.max() <= 1)
    per_label = {
        name: _label_summary(
            truth[:, column], scores[:, column],
            intervals["auroc"].per_label[column], intervals["auprc"].per_label[column], are_probabilities,
        )
        for column, name in enumerate(names)
    }
    level = "image-level" if groups is None else "patient-level"
    return {
        "per_label": per_label,
        "mean_auroc": _json_float(point["mean_auroc"]),
        "mean_auroc_ci": _json_interval(intervals["auroc"].mean),
        "mean_auprc": _json_float(point["mean_auprc"]),
        "mean_auprc_ci": _json_interval(intervals["auprc"].mean),
        "ci_method": f"{level} bootstrap ({n_boot} replicates)",
        "confidence": confidence,
        "n_images": int(truth.shape[0]),
        "n_patients": int(n_groups) if groups is not None else None,
    }


def _label_summary(
    truth: np.ndarray,
    scores: np.ndarray,
    auroc: BootstrapInterval,
    auprc: BootstrapInterval,
    are_probabilities: bool,
) -> dict[str, Any]:
    """One label's entry of :func:`classification_summary`, with None for undefined values."""
    return {
        "auroc": _json_float(auroc.estimate),
        "auroc_ci": _json_interval(auroc),
        "auprc": _json_float(auprc.estimate),
        "auprc_ci": _json_interval(auprc),
        "n_replicates_used": auroc.n_replicates_used,
        "n_positive": int(truth.sum()),
        "n_negative": int(truth.size - truth.sum()),
        "ece": expected_calibration_error(truth, scores) if are_probabilities else None,
    }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _json_interval(interval: BootstrapInterval) -> list[float | None]:
    return [_json_float(interval.lower), _json_float(interval.upper)]
