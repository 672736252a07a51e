"""Sliding-window segmentation of whole volumes, back on the input's own voxel grid.

The volume is prepared from the model card (:mod:`medres.transforms.volume`),
covered by windows of the card's input size that overlap by ``overlap``, the
windows run in batches of ``sw_batch_size`` (batch >= 2 avoids PyTorch's slow
batch-1 3D convolution on CPU), logits are blended with a Gaussian weight
(centre voxels count more than window edges, as nnU-Net), optionally averaged
over mirrored copies (test-time augmentation), and the softmax probabilities
are resampled onto the input grid before the argmax, so the labels overlay the
scan voxel for voxel.

Mixed precision: ``precision="auto"`` runs bf16 autocast on CPUs with native
bf16 and on CUDA (see ``medres.train.loop.resolve_precision``). Under reduced
precision the windows run through a channels-last copy of the model
(:func:`medres.segment.layout.channels_last_copy`), the layout oneDNN's and
cuDNN's 3D convolution kernels prefer: on a 2-core CPU, timed alternately, a
batch of four 96^3 windows of ``resunet3d`` took a median 0.97 s in bf16
without the layout and 0.87 s with it, before its instance norms kept the
layout too (fp32 gained nothing, so fp32 runs the model as it is).

Memory: a CUDA out-of-memory error retries with half as many windows per
batch, then, at one window, on the CPU; each step is recorded in the result's
``notes`` and logged, so the user is told why it got slower.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medres.io import Image
from medres.models.card import ModelCard
from medres.segment.layout import channels_last_copy
from medres.train.loop import autocast_context, resolve_precision
from medres.transforms.volume import prepare_volume, resample_onto_grid

LOGGER = logging.getLogger(__name__)


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
        if self.device:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


ProgressCallback = Callable[[float], None]


def mirror_flips(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of flips of the given spatial axes (the identity first), as tensor dims."""
    dims = [axis + 2 for axis in mirror_axes]
    return [combo for count in range(len(dims) + 1) for combo in itertools.combinations(dims, count)]


def window_memory_format(device: torch.device, precision: str) -> torch.memory_format:
    """Channels-last under bf16/fp16 (fast 3D convolution kernels), the default layout in fp32."""
    reduced = resolve_precision(device, precision) is not None
    return torch.channels_last_3d if reduced else torch.contiguous_format


def window_predictor(model: nn.Module, device: torch.device, precision: str,
                     flips: Sequence[tuple[int, ...]] = ((),),
                     on_windows: Callable[[int], None] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from a batch of windows to float32 logits, averaged over mirrored copies.

    Under reduced precision the windows run through a channels-last copy of
    the model; ``model`` itself is left as it is. ``on_windows(n)`` is called
    after each batch with the number of windows it held.
    """
    memory_format = window_memory_format(device, precision)
    if memory_format == torch.channels_last_3d:
        model = channels_last_copy(model)

    def predict(windows: torch.Tensor) -> torch.Tensor:
        windows = windows.to(device).contiguous(memory_format=memory_format)
        total = None
        with autocast_context(device, precision):
            for dims in flips:
                logits = model(torch.flip(windows, dims) if dims else windows).float()
                logits = torch.flip(logits, dims) if dims else logits
                total = logits if total is None else total + logits
        if on_windows is not None:
            on_windows(len(windows))
        return total / len(flips)
    return predict


def count_windows(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """How many windows cover ``shape`` (as MONAI places them), for progress reporting."""
    count = 1
    for size, roi in zip(shape, roi_size):
        step = max(int(roi * (1 - overlap)), 1)
        count *= 1 if size <= roi else math.ceil((size - roi) / step) + 1
    return count


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
    batch = balanced_batch_size(total, sw_batch_size)
    logits = sliding_window_inference(volume[None].to(device), roi_size=tuple(roi_size), sw_batch_size=batch,
                                      predictor=predictor, overlap=overlap, mode="gaussian", sw_device=device,
                                      device=device)
    return logits[0]


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


def place_model(model: nn.Module, device: torch.device) -> None:
    """Move the model to the device the windows run on (its own function so tests can fake a GPU)."""
    model.to(device)


def tta_mirror_axes(card: ModelCard, notes: list[str]) -> tuple[int, ...]:
    """The axes the model was trained to be mirror-invariant along (the card's ``mirror_axes``).

    Mirroring along an axis the model never saw flipped (left-right for a
    model that tells the liver from the spleen by side) would hurt, so TTA
    uses only those axes and says so when there are none.
    """
    axes = tuple(card.extra.get("mirror_axes", (0, 1, 2)))
    if not axes:
        notes.append("--tta has no effect: the model was trained without mirroring")
    return axes


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
    prepared = prepare_volume(image.array, image.affine, card)
    volume = torch.from_numpy(np.ascontiguousarray(prepared.array))
    notes: list[str] = []
    mirror_axes = tta_mirror_axes(card, notes) if settings.tta else ()

    def run(device: torch.device, sw_batch_size: int) -> torch.Tensor:
        place_model(model, device)
        logits = sliding_window_logits(model, volume, card.input_size, device, sw_batch_size, settings.overlap,
                                       settings.precision, mirror_axes, progress)
        return torch.softmax(logits, dim=0).cpu()

    probabilities = run_with_memory_fallback(run, settings.resolved_device(), settings.sw_batch_size, notes)
    labels = probabilities_to_labels(probabilities, prepared.affine, image.affine, image.spatial_shape)
    return SegmentationResult(labels, np.asarray(image.affine), tuple(card.labels), notes)
