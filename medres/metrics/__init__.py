"""Evaluation metrics: AUROC/AUPRC with patient-level bootstrap intervals, calibration, thresholds,
and spacing-aware segmentation metrics (Dice, HD95 in MedPy's and MONAI's conventions, and surface Dice,
in millimetres).

The package imports its parts when first asked for them: the mL of a label
map (:mod:`medres.metrics.volumes`, used by ``medres segment``) does not need
scikit-learn (over a second to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medres.lazy import lazy_attributes

if TYPE_CHECKING:
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

_PUBLIC = {
    "BootstrapInterval": "medres.metrics.bootstrap",
    "MultiLabelBootstrapInterval": "medres.metrics.bootstrap",
    "bootstrap_ci": "medres.metrics.bootstrap",
    "MetricUndefinedWarning": "medres.metrics.classification",
    "ReliabilityCurve": "medres.metrics.classification",
    "choose_thresholds": "medres.metrics.classification",
    "compute_auprc": "medres.metrics.classification",
    "compute_auroc": "medres.metrics.classification",
    "expected_calibration_error": "medres.metrics.classification",
    "per_label_metrics": "medres.metrics.classification",
    "reliability_curve": "medres.metrics.classification",
    "SurfaceMetrics": "medres.metrics.segmentation",
    "dice": "medres.metrics.segmentation",
    "hausdorff95_max_directed_mm": "medres.metrics.segmentation",
    "hausdorff95_mm": "medres.metrics.segmentation",
    "mask_surface": "medres.metrics.segmentation",
    "normalized_surface_dice": "medres.metrics.segmentation",
    "surface_metrics": "medres.metrics.segmentation",
    "classification_summary": "medres.metrics.summary",
}

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


__getattr__ = lazy_attributes(__name__, _PUBLIC)
