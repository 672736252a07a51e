"""Segmenting volumes with a trained 3D model: ``medres segment`` lives here (``eval seg`` in :mod:`medres.evaluate`).

The orchestration of one input: :mod:`~medres.segment.labels` (one volume ->
labels on its own grid, on top of :mod:`medres.inference`'s sliding window,
TTA and memory fallback) and :mod:`~medres.segment.pipeline` (one input ->
output folder: the NIfTI and DICOM SEG writers of :mod:`medres.io`, label
volumes from :mod:`medres.metrics.volumes`). Batch scoring of DICOM folders is :mod:`medres.score`.
"""

from __future__ import annotations

from medres.inference import SlidingWindowSettings
from medres.segment.labels import SegmentationResult, segment_image
from medres.segment.pipeline import SegmentConfig, SegmentOutputs, segment_to_folder

__all__ = [
    "SegmentConfig",
    "SegmentOutputs",
    "SegmentationResult",
    "SlidingWindowSettings",
    "segment_image",
    "segment_to_folder",
]
