"""Sliding-window logits of whole volumes: batched windows, Gaussian blending, mirroring TTA, memory fallback.

A prepared volume (:mod:`medres.transforms.volume`) is covered by windows of
the card's input size that overlap by ``overlap``; the windows run in batches
of ``sw_batch_size`` (batch >= 2 avoids PyTorch's slow batch-1 3D convolution
on CPU, and the batches are balanced so none holds a lone window), and their
logits are blended with a Gaussian weight (centre voxels count more than
window edges, as nnU-Net), optionally averaged over mirrored copies
(:mod:`medres.inference.tta`). ``medres segment`` and the validation of
``medres train seg`` both call :func:`sliding_window_logits`, so a model is
validated exactly as it is later run.

Windows are placed, padded and blended as MONAI's ``sliding_window_inference``
does with ``mode="gaussian"`` (the tests compare the two); the loop is written
here so that ``medres segment`` never imports MONAI (seconds per start; see
:mod:`medres.models.networks`).

Mixed precision: ``precision="auto"`` runs bf16 autocast where the hardware
has it (:func:`medres.runtime.resolve_precision`). Under reduced precision the
windows run through a channels-last copy of the model
(:func:`medres.inference.layout.channels_last_copy`), the layout oneDNN's and
cuDNN's 3D convolution kernels prefer; fp32 runs the model as it is (the
layout gains nothing there).

Memory: :func:`run_with_memory_fallback` retries a CUDA out-of-memory error
with half as many windows per batch, then, at one window, on the CPU; each
step is recorded in ``notes`` and logged, so the user is told why it got slower.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medres.inference.layout import channels_last_copy
from medres.inference.tta import average_over_flips, mirror_flips
from medres.runtime import autocast_context, resolve_device, resolve_precision

LOGGER = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]
"""Called with the fraction of the work done (0 to 1)."""


@dataclass(frozen=True)
class SlidingWindowSettings:
    """How windows are run.

    Attributes:
        overlap: Fraction of a window shared with its neighbour (0.5: every voxel seen ~8 times in 3D).
        sw_batch_size: Windows per forward pass; halved automatically after a CUDA out-of-memory error.
        precision: "fp32", "bf16", "fp16" or "auto" (bf16 where the hardware has it).
        device: Where windows run; default CUDA when available, else the CPU.
        tta: Average over mirrored copies along the axes the card says the model was trained to mirror.
        progress: Show a progress bar (the CLI does; library calls pass a callback instead).
    """

    overlap: float = 0.5
    sw_batch_size: int = 4
    precision: str = "auto"
    device: str | None = None
    tta: bool = False
    progress: bool = False

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)


def window_memory_format(device: torch.device, precision: str) -> torch.memory_format:
    """Channels-last under bf16/fp16 (fast 3D convolution kernels), the default layout in fp32."""
    reduced = resolve_precision(device, precision) is not None
    return torch.channels_last_3d if reduced else torch.contiguous_format


def window_predictor(model: nn.Module, device: torch.device, precision: str,
                     flips: Sequence[tuple[int, ...]] = ((),),
                     on_windows: Callable[[int], None] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch of windows to logits, averaged (in float32) over mirrored copies.

    A single copy's logits come back as the model gives them (bf16 and
    channels-last under bf16): :func:`blend_windows` widens them as it adds them.

    Under reduced precision the windows run through a channels-last copy of
    the model; ``model`` itself is left as it is. ``on_windows(n)`` is called
    after each batch with the number of windows it held.
    """
    memory_format = window_memory_format(device, precision)
    if memory_format == torch.channels_last_3d:
        model = channels_last_copy(model)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        windows = windows.to(device).contiguous(memory_format=memory_format)
        with autocast_context(device, precision):
            logits = average_over_flips(model, windows, flips)
        if on_windows is not None:
            on_windows(len(windows))
        return logits
    return predict


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where windows of ``roi`` voxels start along an axis of ``size >= roi`` voxels (MONAI's placement).

    Steps of ``roi * (1 - overlap)`` voxels (at least 1); the last window is
    moved back to end at the edge.
    """
    if size <= roi:
        return [0]
    step = max(int(roi * (1 - overlap)), 1)
    return [min(index * step, size - roi) for index in range(math.ceil((size - roi) / step) + 1)]


def count_windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """How many windows cover ``shape`` (as MONAI places them), for progress reporting."""
    return math.prod(len(window_starts(max(size, roi), roi, overlap)) for size, roi in zip(shape, roi_size))


def gaussian_importance(roi_size: Sequence[int], device: torch.device, sigma_scale: float = 0.125) -> torch.Tensor:
    """The weight of each voxel of a window: a Gaussian centred on it, sigma ``sigma_scale`` of its size per axis.

    Floored at its smallest value or 1e-3, whichever is larger, so edge voxels
    still count where only one window covers them (MONAI's ``gaussian`` mode).
    """
    weight = torch.ones((), device=device)
    for axis, size in enumerate(roi_size):
        offsets = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
        profile = torch.exp(offsets ** 2 / (-2 * (size * sigma_scale) ** 2))
        weight = weight[..., None] * profile if axis else profile
    return weight.clamp(min=max(float(weight.min()), 1e-3))


def blend_windows(volume: torch.Tensor, roi_size: Sequence[int], batch_size: int, overlap: float,
                  predict: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Gaussian-weighted average of ``predict`` over the windows covering a ``(C, *spatial)`` volume.

    An axis shorter than its window is padded with zeros on both sides first
    (and cropped back at the end); windows run in batches of ``batch_size``, in
    raster order. ``predict`` may return any floating dtype and layout; the
    average is float32, in the layout of ``predict``'s outputs (channels-last
    windows give a ``(K, *spatial)`` view of channels-last memory).
    """
    padding = [max(roi - size, 0) for size, roi in zip(volume.shape[1:], roi_size)]
    padded = F.pad(volume, [side for pad in reversed(padding) for side in (pad // 2, pad - pad // 2)])
    corners = list(itertools.product(*(window_starts(size, roi, overlap)
                                       for size, roi in zip(padded.shape[1:], roi_size))))
    importance = gaussian_importance(roi_size, volume.device)
    total, weight = None, torch.zeros(padded.shape[1:], device=volume.device)
    for first in range(0, len(corners), batch_size):
        places = [tuple(slice(start, start + roi) for start, roi in zip(corner, roi_size))
                  for corner in corners[first:first + batch_size]]
        logits = predict(torch.stack([padded[(slice(None), *place)] for place in places])).to(volume.device)
        if total is None:
            total = _accumulator_like(logits, padded.shape[1:])
        for place, window_logits in zip(places, logits):
            total[(slice(None), *place)].addcmul_(window_logits, importance)
            weight[place] += importance
    crop = tuple(slice(pad // 2, pad // 2 + size) for pad, size in zip(padding, volume.shape[1:]))
    return total.div_(weight)[(slice(None), *crop)]


def _accumulator_like(logits: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """Float32 zeros ``(K, *spatial_shape)`` laid out as the window ``logits`` are (channels innermost or outermost).

    Matching layouts let each window be weighted and added in one contiguous
    pass, whatever dtype the windows come in (bf16 windows are widened as they are added).
    """
    channels = logits.shape[1]
    if channels > 1 and logits.stride(1) == 1:  # channels-last windows
        return torch.zeros((*spatial_shape, channels), device=logits.device).movedim(-1, 0)
    return torch.zeros((channels, *spatial_shape), device=logits.device)


def balanced_batch_size(n_windows: int, sw_batch_size: int) -> int:
    """The smallest batch size that needs as few batches as ``sw_batch_size`` does.

    9 windows at 4 per batch run as 3 + 3 + 3 instead of 4 + 4 + 1: the same
    number of forward passes, none of them a slow single-window one.
    """
    batches = math.ceil(n_windows / sw_batch_size)
    return math.ceil(n_windows / batches)


@torch.no_grad()
def sliding_window_logits(model: nn.Module, volume: torch.Tensor, roi_size: Sequence[int], device: torch.device,
                          sw_batch_size: int, overlap: float, precision: str, mirror_axes: Sequence[int] = (),
                          progress: ProgressCallback | None = None) -> torch.Tensor:
    """Gaussian-blended logits ``(K, X, Y, Z)`` (float32, on ``device``) of a prepared ``(C, X, Y, Z)`` volume.

    Under reduced precision the result is a view of channels-last memory
    (each voxel's K logits side by side), as the windows were.

    Args:
        progress: Called with the fraction of windows done, after every batch.
    """
    model.eval()
    total, done = count_windows(volume.shape[1:], roi_size, overlap), [0]

    def on_windows(count: int) -> None:
        done[0] += count
        progress(min(done[0] / total, 1.0))

    predictor = window_predictor(model, device, precision, mirror_flips(mirror_axes),
                                 on_windows if progress is not None else None)
    return blend_windows(volume.to(device), tuple(roi_size), balanced_batch_size(total, sw_batch_size), overlap,
                         predictor)


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """The label of each voxel of ``(K, X, Y, Z)`` logits (uint8, on the CPU).

    Softmax and sigmoid keep the order of a voxel's logits, so the argmax of the
    logits is that of the probabilities; no probability need be computed where
    nothing is resampled. The argmax runs over each voxel's logits side by
    side (channels-last memory, which reduced-precision windows already give):
    along the outermost dimension PyTorch's argmax is over ten times slower.
    """
    return logits.movedim(0, -1).contiguous().argmax(dim=-1).to(device="cpu", dtype=torch.uint8)


def run_with_memory_fallback(run: Callable[[torch.device, int], torch.Tensor], device: torch.device,
                             sw_batch_size: int, notes: list[str]) -> torch.Tensor:
    """``run(device, sw_batch_size)``, retrying after CUDA out-of-memory errors with less memory.

    First halves the windows per batch down to one, then moves to the CPU
    (with the original batch size); each retry is appended to ``notes`` and
    logged. An out-of-memory error on the CPU is not retried.
    """
    batch = sw_batch_size
    while True:
        try:
            return run(device, batch)
        except torch.OutOfMemoryError:
            if device.type == "cpu":
                raise
            _release_accelerator_memory()
            if batch > 1:
                batch //= 2
                note = f"out of {device.type} memory: retrying with {batch} window(s) per batch"
            else:
                device, batch = torch.device("cpu"), sw_batch_size
                note = f"out of memory even with one window per batch: running on the CPU ({batch} per batch)"
            LOGGER.warning(note)
            notes.append(note)


def _release_accelerator_memory() -> None:
    if torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.empty_cache()
