"""Evaluation metrics: AUROC/AUPRC with patient-level bootstrap intervals, calibration, thresholds,
and spacing-aware segmentation metrics (Dice, HD95 in MedPy's and MONAI's conventions, and surface Dice,
in millimetres)."""

from __future__ import annotations

from medres.metrics.bootstrap import (
    BootstrapInterval,
    MultiLabelBootstrapInterval,
    bootstrap_ci,
)
from medres.metrics.classification import (
    MetricUndefinedWarning,
    ReliabilityCurve,
    choose_thresholds,
    compute_auprc,
    compute_auroc,
    expected_calibration_error,
    per_label_metrics,
    reliability_curve,
)
from medres.metrics.segmentation import (
    SurfaceMetrics,
    dice,
    hausdorff95_max_directed_mm,
    hausdorff95_mm,
    mask_surface,
    normalized_surface_dice,
    surface_metrics,
)
from medres.metrics.summary import classification_summary

__all__ = [
    "BootstrapInterval",
    "MetricUndefinedWarning",
    "MultiLabelBootstrapInterval",
    "ReliabilityCurve",
    "SurfaceMetrics",
    "bootstrap_ci",
    "choose_thresholds",
    "classification_summary",
    "compute_auprc",
    "compute_auroc",
    "dice",
    "expected_calibration_error",
    "hausdorff95_max_directed_mm",
    "hausdorff95_mm",
    "mask_surface",
    "normalized_surface_dice",
    "per_label_metrics",
    "reliability_curve",
    "surface_metrics",
]
