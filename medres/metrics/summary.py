"""One JSON-safe summary of a multi-label classifier's evaluation: metrics, intervals, calibration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medres.metrics.bootstrap import (
    BootstrapInterval,
    bootstrap_intervals,
    check_bootstrap_settings,
    patient_group_index,
)
from medres.metrics.classification import (
    compute_auprc,
    compute_auroc,
    expected_calibration_error,
    per_label_metrics,
    validated_pair,
)


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
    truth, scores = validated_pair(y_true, y_score, ndims=(2,))
    check_bootstrap_settings(n_boot, confidence)
    point = per_label_metrics(truth, scores, labels)
    names = list(point["per_label"])
    group_index, n_groups = patient_group_index(groups, truth.shape[0])
    intervals = {
        metric_name: bootstrap_intervals(
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
