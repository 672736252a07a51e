"""Running a trained model on prepared inputs: below training, evaluation, scoring, segmentation and the app.

- :mod:`~medres.inference.classify`: batched prediction of a classifier with
  the card's output activation (:func:`predict_batch`, :func:`predict_dataset`);
- :mod:`~medres.inference.sliding_window`: Gaussian-blended sliding-window
  logits of whole volumes, with the out-of-memory fallback;
- :mod:`~medres.inference.tta`: mirroring test-time augmentation;
- :mod:`~medres.inference.layout`: channels-last copies of 3D networks.

Device, precision and process groups come from :mod:`medres.runtime`; nothing
here imports :mod:`medres.train`.
"""

from __future__ import annotations

from medres.inference.classify import output_activation, predict_batch, predict_dataset
from medres.inference.sliding_window import (
    ProgressCallback,
    SlidingWindowSettings,
    run_with_memory_fallback,
    sliding_window_logits,
)
from medres.inference.tta import mirror_flips, tta_mirror_axes

__all__ = [
    "ProgressCallback",
    "SlidingWindowSettings",
    "mirror_flips",
    "output_activation",
    "predict_batch",
    "predict_dataset",
    "run_with_memory_fallback",
    "sliding_window_logits",
    "tta_mirror_axes",
]
