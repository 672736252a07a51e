"""Running a trained model on prepared inputs: below training, evaluation, scoring, segmentation and the app.

- :mod:`~medres.inference.classify`: batched prediction of a classifier with
  the card's output activation (:func:`predict_batch`, :func:`predict_dataset`);
- :mod:`~medres.inference.sliding_window`: Gaussian-blended sliding-window
  logits of whole volumes, with the out-of-memory fallback;
- :mod:`~medres.inference.tta`: mirroring test-time augmentation;
- :mod:`~medres.inference.layout`: channels-last copies of 3D networks.

Device, precision and process groups come from :mod:`medres.runtime`; nothing
here imports :mod:`medres.train`. The package imports its parts when first
asked for them: classifying never imports MONAI, which the sliding window
needs (``import monai`` takes seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medres.lazy import lazy_attributes

if TYPE_CHECKING:
    from medres.inference.classify import output_activation, predict_batch, predict_dataset
    from medres.inference.sliding_window import (
        ProgressCallback,
        SlidingWindowSettings,
        logits_to_labels,
        run_with_memory_fallback,
        sliding_window_logits,
    )
    from medres.inference.tta import mirror_flips, tta_mirror_axes

_PUBLIC = {
    "output_activation": "medres.inference.classify",
    "predict_batch": "medres.inference.classify",
    "predict_dataset": "medres.inference.classify",
    "ProgressCallback": "medres.inference.sliding_window",
    "SlidingWindowSettings": "medres.inference.sliding_window",
    "logits_to_labels": "medres.inference.sliding_window",
    "run_with_memory_fallback": "medres.inference.sliding_window",
    "sliding_window_logits": "medres.inference.sliding_window",
    "mirror_flips": "medres.inference.tta",
    "tta_mirror_axes": "medres.inference.tta",
}

__all__ = [
    "ProgressCallback",
    "SlidingWindowSettings",
    "logits_to_labels",
    "mirror_flips",
    "output_activation",
    "predict_batch",
    "predict_dataset",
    "run_with_memory_fallback",
    "sliding_window_logits",
    "tta_mirror_axes",
]


__getattr__ = lazy_attributes(__name__, _PUBLIC)
