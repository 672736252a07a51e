"""Segmenting one volume: sliding-window logits -> class probabilities -> labels on the input's own voxel grid.

The volume is prepared from the model card (:mod:`medres.transforms.volume`),
run through :func:`medres.inference.sliding_window_logits` (with the
out-of-memory fallback and, if asked, mirroring TTA), turned into
probabilities by the card's output activation, and each class's probability is
resampled onto the input grid before the argmax, so the labels overlay the
scan voxel for voxel. Where the model's grid is the input's own, the argmax
is taken of the logits directly (the same labels, without the probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medres.inference import (
    ProgressCallback,
    SlidingWindowSettings,
    logits_to_labels,
    output_activation,
    run_with_memory_fallback,
    sliding_window_logits,
    tta_mirror_axes,
)
from medres.io import Image
from medres.transforms.volume import on_same_grid, prepare_volume, resample_onto_grid


@dataclass
class SegmentationResult:
    """Labels on the input's RAS+ grid (``(X, Y, Z)`` uint8, same shape and affine as the input Image).

    ``np.asarray(result)`` gives the labels, so callers that only want the
    array (the review app) need not know this class.
    """

    labels: np.ndarray
    affine: np.ndarray
    label_names: tuple[str, ...]
    notes: list[str] = field(default_factory=list)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.labels if dtype is None else self.labels.astype(dtype)


def place_model(model: nn.Module, device: torch.device) -> None:
    """Move the model to the device the windows run on (its own function so tests can fake a GPU)."""
    model.to(device)


def probabilities_to_labels(probabilities: torch.Tensor, affine: np.ndarray, target_affine: np.ndarray,
                            target_shape: Sequence[int]) -> np.ndarray:
    """Resample each class's probability onto the target grid, then take the argmax there.

    One channel at a time with a running maximum, so memory stays at two
    target-sized volumes whatever the number of labels.
    """
    best = torch.full(tuple(target_shape), -1.0)
    labels = torch.zeros(tuple(target_shape), dtype=torch.uint8)
    for index, channel in enumerate(probabilities):
        resampled = resample_onto_grid(channel[None].cpu(), affine, target_affine, target_shape)[0]
        better = resampled > best
        best = torch.where(better, resampled, best)
        labels[better] = index
    return labels.numpy()


def segment_image(model: nn.Module, image: Image, settings: SlidingWindowSettings | None = None,
                  progress: ProgressCallback | None = None) -> SegmentationResult:
    """Segment one volume; the labels lie on ``image``'s grid (its shape and affine).

    Args:
        model: A segmentation model with its card (``model.card``).
        image: A volume from :func:`medres.io.read_image` (RAS+).
        settings: Sliding-window settings; defaults as the CLI's.
        progress: Called with the fraction of windows done (for progress bars).
    """
    settings = settings or SlidingWindowSettings()
    card = model.card
    activation = output_activation(card)
    prepared = prepare_volume(image.array, image.affine, card)
    volume = torch.from_numpy(np.ascontiguousarray(prepared.array))
    notes: list[str] = []
    mirror_axes = tta_mirror_axes(card, notes) if settings.tta else ()

    on_input_grid = on_same_grid(volume.shape[1:], prepared.affine, image.spatial_shape, image.affine)

    def run(device: torch.device, sw_batch_size: int) -> torch.Tensor:
        """Labels where nothing is resampled, else the probabilities to resample."""
        place_model(model, device)
        logits = sliding_window_logits(model, volume, card.input_size, device, sw_batch_size, settings.overlap,
                                       settings.precision, mirror_axes, progress)
        return logits_to_labels(logits) if on_input_grid else activation(logits[None])[0].cpu()

    outputs = run_with_memory_fallback(run, settings.resolved_device(), settings.sw_batch_size, notes)
    if on_input_grid:
        labels = outputs.numpy()
    else:
        labels = probabilities_to_labels(outputs, prepared.affine, image.affine, image.spatial_shape)
    return SegmentationResult(labels, np.asarray(image.affine), tuple(card.labels), notes)
