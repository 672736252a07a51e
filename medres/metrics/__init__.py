"""Evaluation metrics: AUROC/AUPRC with patient-level bootstrap intervals, calibration, thresholds,
and spacing-aware segmentation metrics (Dice, HD95 and surface Dice in millimetres)."""

from __future__ import annotations

from medres.metrics.classification import (
    BootstrapInterval,
    MetricUndefinedWarning,
    MultiLabelBootstrapInterval,
    ReliabilityCurve,
    bootstrap_ci,
    choose_thresholds,
    classification_summary,
    compute_auprc,
    compute_auroc,
    expected_calibration_error,
    per_label_metrics,
    reliability_curve,
)
from medres.metrics.segmentation import dice, hausdorff95_mm, normalized_surface_dice

__all__ = [
    "BootstrapInterval",
    "MetricUndefinedWarning",
    "MultiLabelBootstrapInterval",
    "ReliabilityCurve",
    "bootstrap_ci",
    "choose_thresholds",
    "classification_summary",
    "compute_auprc",
    "compute_auroc",
    "dice",
    "expected_calibration_error",
    "hausdorff95_mm",
    "normalized_surface_dice",
    "per_label_metrics",
    "reliability_curve",
]
