"""Grad-CAM and Grad-CAM++ for every registered chest X-ray classifier.

The target layer comes from the model card (``card.gradcam_layer``), so the
review app, batch scoring and tests never hard-code module names.

How activations and gradients are captured: a forward hook stores the target
layer's output and hands a *clone* downstream. Whatever the network does
afterwards in place (MONAI's in-place ReLUs, DenseNet's ``relu``), it does to
the clone, so the stored tensor keeps the values it had and
``torch.autograd.grad(score, stored)`` is always well defined. No backward
hooks are used: ``register_full_backward_hook`` is what breaks on in-place
activations.

Every image of a batch is explained for its *own* target class(es): in round
``k`` the summed score is ``sum_b logit[b, targets[b, k]]``; in eval mode
(BatchNorm uses running statistics) images do not interact, so the gradient
on image ``b``'s activation is exactly the gradient of its own logit, and a
batch gives the same maps as explaining each image alone.

Normalisation (the choice, and why): maps are **not** min-max scaled one by
one, which would paint a class with probability 0.01 as brightly as one with
0.99. ``normalized`` is ``raw / max(raw) * probability`` by default: the shape
comes from the map, the peak brightness is the model's probability for that
class, so a class far below its threshold shows as weak. ``scale="reference"``
instead divides by one fixed number for the model (e.g. from
:func:`reference_scale` on a calibration batch) so raw magnitudes stay
comparable across images and classes. Both are clipped to [0, 1] and both are
independent of what else is in the batch.

Geometry: each feature cell is placed at its receptive-field centre on the
input, measured per architecture (:mod:`medres.explain.geometry`; for the
ResNets that is half a cell away from where plain upsampling puts it), and
:meth:`CamResult.on_original` samples the same cells onto the original
radiograph's pixels by undoing the preprocessing: its full-field resize, and
the card's crop (``crop="center_square"``: the model saw the largest centred
square, so the map covers that square and is 0, no evidence, beside it;
:func:`region_seen_by_model`). Results are returned on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medres.errors import InvalidModelCardError, UnknownLabelError, UsageError
from medres.explain.geometry import FeatureGrid, feature_grid, sample_maps
from medres.inference import output_activation
from medres.models.card import CROPS
from medres.transforms.cxr import center_square_box

METHODS: tuple[str, ...] = ("gradcam", "gradcam++")
SCALES: tuple[str, ...] = ("probability", "reference")
EPSILON = 1e-12
TargetSpec = Sequence[int | str] | Sequence[Sequence[int | str]] | None


@dataclass(frozen=True)
class CamResult:
    """Class activation maps of a batch, one per (image, target class).

    Attributes:
        feature_maps: ``(B, K, h, w)`` raw maps on the target layer's grid:
            ReLU of the gradient-weighted sum of activation channels.
        maps: ``(B, K, H, W)`` the raw maps sampled onto the input pixels, each
            feature cell placed at its measured receptive-field centre (see
            :mod:`medres.explain.geometry`).
        normalized: ``(B, K, H, W)`` in [0, 1], scaled as the module docstring says.
        display_scale: ``(B, K)`` the factor that turns a raw map into its
            normalised one (before clipping to [0, 1]).
        targets: ``(B, K)`` class indices each map explains.
        probabilities: ``(B, n_labels)`` the card's output activation of the logits (a sigmoid).
        labels: Label names in output order (from the card).
        method: ``"gradcam"`` or ``"gradcam++"``.
        scale: ``"probability"`` or ``"reference"``.
        grid: Where feature cells sit on the input (used to map onto other grids).
        crop: The card's ``crop`` the inputs were made with: which part of the
            original image the maps cover (see :func:`region_seen_by_model`).
    """

    feature_maps: torch.Tensor
    maps: torch.Tensor
    normalized: torch.Tensor
    display_scale: torch.Tensor
    targets: torch.Tensor
    probabilities: torch.Tensor
    labels: tuple[str, ...]
    method: str
    scale: str
    grid: FeatureGrid
    crop: str = "none"

    def target_names(self, index: int) -> list[str]:
        """Label names of image ``index``'s maps, in map order."""
        return [self.labels[int(target)] for target in self.targets[index]]

    def on_original(self, index: int, original_shape: tuple[int, int], normalized: bool = True,
                    crop: str | None = None) -> np.ndarray:
        """Image ``index``'s maps, ``(K, rows, cols)``, on the original radiograph's pixel grid.

        Args:
            index: Position of the image in the batch.
            original_shape: ``(rows, cols)`` of the image before preprocessing (or
                the aspect-kept size it is displayed at).
            normalized: Normalised maps (for display) or raw ones (for measuring).
            crop: The crop the input was made with; default: the model card's
                (:attr:`crop`). Pixels outside what the model saw are 0.
        """
        top, left, rows, cols = region_seen_by_model(original_shape, self.crop if crop is None else crop)
        input_size = tuple(self.maps.shape[-2:])
        maps = sample_maps(self.feature_maps[index], self.grid, input_size, (rows, cols))
        if normalized:
            maps = (maps * self.display_scale[index][:, None, None]).clamp(0.0, 1.0)
        return place_on_original(maps, original_shape, (top, left, rows, cols)).numpy()


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec = None,
    method: str = "gradcam",
    scale: str = "probability",
    reference: float | None = None,
) -> CamResult:
    """Grad-CAM (or Grad-CAM++) maps for a batch of preprocessed chest X-rays.

    Args:
        model: A registered classifier with ``model.card``; put in eval mode for
            the call (its previous mode is restored afterwards).
        inputs: ``(B, C, H, W)`` tensors as ``preprocess_for_model`` makes them.
        targets: Which classes to explain: ``None`` for every label; one index
            or label name per image; or one equal-length list per image.
        method: ``"gradcam"`` or ``"gradcam++"``.
        scale: ``"probability"`` or ``"reference"`` (see the module docstring).
        reference: The fixed raw value that maps to 1.0 when ``scale="reference"``.

    Raises:
        UsageError: Unknown method or scale, a missing reference, or targets
            that do not fit the batch.
        UnknownLabelError: A target label the card does not have.
    """
    card = model.card
    _check_options(method, scale, reference, card.gradcam_layer)
    target_indices = resolve_targets(targets, card.labels, inputs.shape[0])
    with _eval_mode(model), _captured_output(model.get_submodule(card.gradcam_layer)) as captured:
        with torch.enable_grad():
            logits = model(inputs.detach().clone().requires_grad_(True))
            activation = captured[0]
            feature_maps = _maps_for_targets(logits, activation, target_indices, method).cpu()
    probabilities = output_activation(card)(logits.detach()).cpu()
    input_size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    grid = feature_grid(model, input_size)
    maps = sample_maps(feature_maps, grid, input_size, input_size)
    factor = display_scale(feature_maps, probabilities.gather(1, target_indices), scale, reference)
    return CamResult(feature_maps, maps, (maps * factor[..., None, None]).clamp(0.0, 1.0), factor, target_indices,
                     probabilities, tuple(card.labels), method, scale, grid, card.crop)


def resolve_targets(targets: TargetSpec, labels: Sequence[str], batch_size: int) -> torch.Tensor:
    """Targets as a ``(B, K)`` long tensor of class indices."""
    if targets is None:
        return torch.arange(len(labels)).repeat(batch_size, 1)
    rows = [list(item) if isinstance(item, (list, tuple)) else [item] for item in targets]
    if len(rows) != batch_size or len({len(row) for row in rows}) != 1 or not rows[0]:
        raise UsageError(f"targets need one class or one equal-length, non-empty list per image "
                         f"({batch_size} images), got {targets!r}")
    return torch.tensor([[_class_index(item, labels) for item in row] for row in rows], dtype=torch.long)


def display_scale(
    feature_maps: torch.Tensor, probabilities: torch.Tensor, scale: str, reference: float | None = None,
) -> torch.Tensor:
    """``(B, K)`` factors taking raw maps to display maps: peak = class probability, or 1 / reference.

    The peak is taken on the feature grid: bilinear upsampling never exceeds it.
    """
    if scale == "reference":
        return torch.full(feature_maps.shape[:2], 1.0 / float(reference))
    peaks = feature_maps.flatten(2).amax(dim=2).clamp_min(EPSILON)
    return probabilities / peaks


def reference_scale(result: CamResult, quantile: float = 0.99) -> float:
    """A fixed per-model scale: the ``quantile`` of raw map peaks over a calibration batch.

    Compute it once on representative images and pass it as ``reference`` so
    every later map is measured against the same yardstick.
    """
    peaks = result.feature_maps.flatten(2).amax(dim=2).flatten()
    return max(float(torch.quantile(peaks, quantile)), EPSILON)


def map_to_original(maps: torch.Tensor, original_shape: tuple[int, int], crop: str = "none") -> torch.Tensor:
    """Resize maps ``(..., h, w)`` on the model's input grid onto the original image grid ``(rows, cols)``.

    Preprocessing crops the radiograph as the card says (nothing, or its
    largest centred square), resizes what it kept to the stored square and
    then to the input size; a chain of full-field resizes with half-pixel
    centres is one full-field resize, so its inverse is one resize from the
    map's grid onto the kept region with the same convention, placed where
    the region lies in the original (0 elsewhere).
    """
    region = region_seen_by_model(original_shape, crop)
    return place_on_original(_upsample(maps.detach().float(), region[2:]), original_shape, region)


def region_seen_by_model(original_shape: tuple[int, int], crop: str) -> tuple[int, int, int, int]:
    """``(top, left, rows, cols)`` of the part of a ``(rows, cols)`` image that preprocessing with ``crop`` keeps.

    The one place the card's crop is undone, for every map placed on an
    original radiograph (the app, ``eval cxr --localisation``, the box
    measures): the whole image for ``"none"``, its largest centred square
    (:func:`medres.transforms.cxr.center_square_box`, where the crop takes it)
    for ``"center_square"``.

    Raises:
        InvalidModelCardError: ``crop`` is not one of the card's crops.
    """
    rows, cols = (int(size) for size in original_shape)
    if crop == "none":
        return 0, 0, rows, cols
    if crop == "center_square":
        top, left, side = center_square_box(rows, cols)
        return top, left, side, side
    raise InvalidModelCardError(f"crop {crop!r} is not one of {', '.join(CROPS)}")


def place_on_original(maps: torch.Tensor, original_shape: tuple[int, int],
                      region: tuple[int, int, int, int]) -> torch.Tensor:
    """Maps ``(..., rows, cols)`` of a region set into zeros of ``original_shape`` at ``region``'s place."""
    shape = tuple(int(size) for size in original_shape)
    top, left, rows, cols = region
    if (top, left, rows, cols) == (0, 0, *shape):
        return maps
    placed = maps.new_zeros((*maps.shape[:-2], *shape))
    placed[..., top:top + rows, left:left + cols] = maps
    return placed


def _maps_for_targets(logits: torch.Tensor, activation: torch.Tensor, targets: torch.Tensor,
                      method: str) -> torch.Tensor:
    """``(B, K, h, w)`` raw maps: one backward pass per target column, all images at once."""
    rounds = targets.shape[1]
    maps = []
    for column in range(rounds):
        score = logits.gather(1, targets[:, column:column + 1].to(logits.device)).sum()
        gradient, = torch.autograd.grad(score, activation, retain_graph=column < rounds - 1)
        maps.append(_weighted_map(activation.detach().float(), gradient.float(), method))
    return torch.stack(maps, dim=1)


def _weighted_map(activation: torch.Tensor, gradient: torch.Tensor, method: str) -> torch.Tensor:
    """ReLU of the channel-weighted activation sum, ``(B, h, w)``.

    Grad-CAM weighs channels by their mean gradient (Selvaraju et al. 2017).
    Grad-CAM++ (Chattopadhay et al. 2018) weighs positive gradients pixel-wise
    by ``alpha = g^2 / (2 g^2 + sum(A) g^3)``, the closed form for an
    exponential of the score, which favours several separate hot spots.
    """
    if method == "gradcam":
        weights = gradient.mean(dim=(2, 3), keepdim=True)
    else:
        squared, cubed = gradient.pow(2), gradient.pow(3)
        activation_sum = activation.sum(dim=(2, 3), keepdim=True)
        denominator = 2 * squared + activation_sum * cubed
        defined = denominator.abs() > EPSILON
        alpha = torch.where(defined, squared / torch.where(defined, denominator, 1.0), 0.0)
        weights = (alpha * F.relu(gradient)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1))


def _upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(..., h, w)`` with half-pixel centres (``align_corners=False``)."""
    leading = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return flat.reshape(*leading, *size)


def _class_index(item: int | str, labels: Sequence[str]) -> int:
    if isinstance(item, str):
        if item not in labels:
            raise UnknownLabelError(f"unknown label {item!r}; the model's labels are: {', '.join(labels)}")
        return list(labels).index(item)
    index = int(item)
    if not 0 <= index < len(labels):
        raise UsageError(f"class index {index} is outside 0..{len(labels) - 1}")
    return index


def _check_options(method: str, scale: str, reference: float | None, layer: str) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    if scale not in SCALES:
        raise UsageError(f"unknown map scale {scale!r}; choose one of {', '.join(SCALES)}")
    if scale == "reference" and (reference is None or not reference > 0):
        raise UsageError("scale='reference' needs a positive reference value (see reference_scale)")
    if not layer:
        raise UsageError("the model card names no gradcam_layer, so Grad-CAM cannot run on this model")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call (BatchNorm on running statistics), previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _captured_output(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Store the layer's output and pass a clone on, so later in-place ops cannot touch it."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        captured.clear()
        captured.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
