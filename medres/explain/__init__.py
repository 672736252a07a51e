"""Explanations for classifiers: Grad-CAM / Grad-CAM++ maps and how well they localise.

Example::

    result = explain(model, inputs, targets=["Effusion", "Nodule"], method="gradcam++")
    overlay = result.on_original(0, original_shape)[0]  # peak brightness = probability
"""

from __future__ import annotations

from medres.explain.geometry import FeatureGrid, feature_grid, sample_maps
from medres.explain.gradcam import (
    METHODS,
    SCALES,
    CamResult,
    display_scale,
    explain,
    map_to_original,
    reference_scale,
    region_seen_by_model,
    resolve_targets,
)
from medres.explain.quality import (
    confidence_drop,
    evaluate_boxes,
    intersection_over_box,
    pointing_game,
    random_regions,
    top_region,
)

__all__ = [
    "METHODS",
    "SCALES",
    "CamResult",
    "FeatureGrid",
    "confidence_drop",
    "display_scale",
    "evaluate_boxes",
    "explain",
    "feature_grid",
    "intersection_over_box",
    "map_to_original",
    "pointing_game",
    "random_regions",
    "reference_scale",
    "region_seen_by_model",
    "resolve_targets",
    "sample_maps",
    "top_region",
]
