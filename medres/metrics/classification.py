"""Classification metrics for multi-label chest X-ray models, with honest intervals.

ChestX-ray14 holds many images per patient, and images of one patient are far
more alike than images of two patients. An image-level bootstrap treats them as
independent and gives intervals that are too narrow, so the default here is the
cluster bootstrap: resample patients, keep all of each drawn patient's images.

The patient-level bootstrap lives in :mod:`medres.metrics.bootstrap` and the
report summary that combines both in :mod:`medres.metrics.summary`.

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
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from medres.errors import UsageError

MetricFunction = Callable[[np.ndarray, np.ndarray], float]



class MetricUndefinedWarning(UserWarning):
    """A metric was NaN because a label has a single class (only positives or only negatives)."""


# --------------------------------------------------------------------------- validation


def validated_pair(
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


def validated_labels(labels: Sequence[str], n_columns: int) -> list[str]:
    names = [str(label) for label in labels]
    if len(names) != n_columns or len(set(names)) != len(names):
        raise UsageError(
            f"labels must be {n_columns} unique names, one per column; got {len(names)}: {names}"
        )
    return names


def label_is_defined(truth: np.ndarray, label: str | None = None) -> bool:
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


def mean_of_defined(values: Sequence[float]) -> float:
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
    truth, scores = validated_pair(y_true, y_score, ndims=(1,))
    return float(roc_auc_score(truth, scores)) if label_is_defined(truth) else math.nan


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
    truth, scores = validated_pair(y_true, y_score, ndims=(1,))
    return float(average_precision_score(truth, scores)) if label_is_defined(truth) else math.nan


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
    truth, scores = validated_pair(y_true, y_score, ndims=(2,))
    names = validated_labels(labels, truth.shape[1])
    per_label: dict[str, dict[str, float]] = {}
    for column, name in enumerate(names):
        label_truth, label_scores = truth[:, column], scores[:, column]
        if label_is_defined(label_truth, name):
            per_label[name] = {
                "auroc": float(roc_auc_score(label_truth, label_scores)),
                "auprc": float(average_precision_score(label_truth, label_scores)),
            }
        else:
            per_label[name] = {"auroc": math.nan, "auprc": math.nan}
    return {
        "per_label": per_label,
        "mean_auroc": mean_of_defined([entry["auroc"] for entry in per_label.values()]),
        "mean_auprc": mean_of_defined([entry["auprc"] for entry in per_label.values()]),
    }


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
    truth, probabilities = validated_pair(y_true, y_prob, ndims=(1,))
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
    truth, scores = validated_pair(y_true, y_score, ndims=(1, 2))
    truth, scores = truth.reshape(truth.shape[0], -1), scores.reshape(scores.shape[0], -1)
    default_labels = [str(column) for column in range(truth.shape[1])]
    names = validated_labels(default_labels if labels is None else labels, truth.shape[1])
    thresholds: dict[str, dict[str, float]] = {}
    for column, name in enumerate(names):
        if not label_is_defined(truth[:, column], name):
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
