"""Segmenting volumes with a trained 3D model: ``medres segment`` lives here (``eval seg`` in :mod:`medres.evaluate`).

Inference sits in this one package (not in ``medres.score``, which walks and
batch-scores DICOM folders): :mod:`~medres.segment.inference` (sliding window,
TTA, precision, memory fallback), :mod:`~medres.segment.outputs` (NIfTI on the
input grid, DICOM SEG, volumes), :mod:`~medres.segment.pipeline` (one input ->
output folder) and :mod:`~medres.segment.evaluation` (Dice, HD95, NSD reports).
"""

from __future__ import annotations

from medres.segment.inference import SegmentationResult, SlidingWindowSettings, segment_image
from medres.segment.pipeline import SegmentConfig, SegmentOutputs, segment_to_folder

__all__ = [
    "SegmentConfig",
    "SegmentOutputs",
    "SegmentationResult",
    "SlidingWindowSettings",
    "segment_image",
    "segment_to_folder",
]
