"""Chest X-ray preprocessing, built from the model card in one place.

Two stages, so that every source gives the same tensors:

1. ``to_stored(image, size, crop)``: any decoded radiograph (DICOM display
   values, 8- or 16-bit PNG) -> min-max scaled, cropped as the card says
   (nothing, or the centred square torchxrayvision's models expect), resized
   with antialiasing to ``size x size``, quantised to uint8. This is what the
   preprocessing cache stores, and what the PNG loader, batch scoring and the
   app compute on the fly.
2. ``CxrInputTransform(card)``: uint8 ``(S, S)`` -> float in [0, 1] -> resized to
   the card's input size -> normalised as the card says, with optional
   training augmentation (flip, small rotation/scale) seeded per sample ->
   the gray channel repeated into the card's ``in_channels`` (3 for a network
   that keeps an ImageNet head).

Both take their settings from the card's typed fields (``stored_size``,
``crop``, ``input_size``, ``normalization``, ``in_channels``) and nothing
else: :func:`preprocess_for_model` chains them for one decoded radiograph.

Training, evaluation, scoring and the review app all call these two, so their
preprocessing cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medres.errors import InvalidModelCardError
from medres.models.card import CROPS, ModelCard


def to_stored(array: np.ndarray, size: int, crop: str = "none") -> np.ndarray:
    """A ``(1, rows, cols)`` radiograph as the uint8 ``(size, size)`` image training sees.

    Min-max scaling makes DICOM display values, 8-bit and 16-bit PNGs comparable;
    resizing uses antialiased bilinear interpolation (``torch.nn.functional.interpolate``,
    ~100x faster than MONAI's antialiased ``Resize`` on a full radiograph).

    Args:
        array: The decoded radiograph, channel first.
        size: The stored (square) size.
        crop: The card's ``crop``: ``"none"`` resizes the whole image (a non-square
            image is squeezed), ``"center_square"`` first keeps its largest centred
            square, as the models imported from torchxrayvision were trained.
    """
    scaled = scale_to_unit(array[:1])
    if crop == "center_square":
        scaled = crop_center_square(scaled)
    elif crop != "none":
        raise InvalidModelCardError(f"crop {crop!r} is not one of {', '.join(CROPS)}")
    resized = resize(scaled, (size, size))
    return (resized[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def scale_to_unit(array: np.ndarray) -> torch.Tensor:
    """Min-max scaling to [0, 1] in float32; a constant image becomes zeros.

    What MONAI's ``ScaleIntensity(minv=0, maxv=1)`` computes (a test compares
    them), written out so that decoder processes never import MONAI (seconds
    per process; see :mod:`medres.models.networks`).
    """
    values = torch.as_tensor(np.asarray(array, dtype=np.float32))
    low, high = values.min(), values.max()
    if low == high:
        return torch.zeros_like(values)
    return (values - low) / (high - low)


def crop_center_square(channels_first: torch.Tensor) -> torch.Tensor:
    """The largest centred square of a ``(C, H, W)`` tensor (a view; square input is returned as is).

    The square starts at ``length // 2 - side // 2`` along each axis, where
    torchxrayvision's ``XRayCenterCrop`` starts it, so an odd margin loses its
    extra pixel on the same side and the same pixels are kept.
    """
    top, left, side = center_square_box(*channels_first.shape[-2:])
    return channels_first[..., top:top + side, left:left + side]


def center_square_box(rows: int, columns: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the largest centred square of a ``rows x columns`` image.

    What ``crop="center_square"`` keeps, so that a map computed on the model's
    input (Grad-CAM) can be placed back on the original image.
    """
    side = min(rows, columns)
    return rows // 2 - side // 2, columns // 2 - side // 2, side


def resize(channels_first: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a ``(C, H, W)`` tensor; a no-op at the same size."""
    if tuple(channels_first.shape[-2:]) == tuple(size):
        return channels_first
    return F.interpolate(channels_first[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, as in CheXNet (flips) plus mild rotation/scale."""

    flip_probability: float = 0.5
    max_rotation_degrees: float = 5.0
    max_scale_change: float = 0.05


class CxrInputTransform:
    """uint8 ``(S, S)`` stored image -> normalised ``(C, H, W)`` float tensor for the model.

    ``C`` is the card's ``in_channels``: the gray image repeated into each
    channel, after augmentation, so every channel sees the same flip.

    Args:
        card: The model card: input size, normalisation and channel count come from it
            (kept as ``self.card``, so a dataset can store images as the same card says).
        augmentation: ``None`` for evaluation and scoring.
        seed: Base seed; augmentation for sample ``index`` in ``epoch`` depends
            only on ``(seed, epoch, index)``, so it is identical whichever loader
            worker draws it, and a resumed run repeats it exactly.
    """

    def __init__(self, card: ModelCard, augmentation: Augmentation | None = None, seed: int = 0):
        self.card = card
        self.input_size = tuple(card.input_size)
        self.in_channels = card.in_channels
        self.mean = float(card.normalization.get("mean", 0.0))
        self.std = float(card.normalization.get("std", 1.0))
        self.augmentation = augmentation
        self.seed = seed

    def __call__(self, stored: np.ndarray, index: int = 0, epoch: int = 0) -> torch.Tensor:
        image = torch.tensor(stored, dtype=torch.float32).div_(255.0)[None]  # copies: caches are read-only
        image = resize(image, self.input_size)
        if self.augmentation is not None:
            image = self._augment(image, np.random.default_rng((self.seed, epoch, index)))
        return expand_gray_channels((image - self.mean) / self.std, self.in_channels)

    def _augment(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        settings = self.augmentation
        if rng.random() < settings.flip_probability:
            image = torch.flip(image, dims=(-1,))
        angle = np.deg2rad(rng.uniform(-settings.max_rotation_degrees, settings.max_rotation_degrees))
        scale = 1.0 + rng.uniform(-settings.max_scale_change, settings.max_scale_change)
        theta = torch.tensor([[np.cos(angle) / scale, -np.sin(angle) / scale, 0.0],
                              [np.sin(angle) / scale, np.cos(angle) / scale, 0.0]], dtype=torch.float32)
        grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
        return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def expand_gray_channels(gray: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A ``(1, H, W)`` gray image repeated into ``in_channels`` channels (itself when that is 1)."""
    return gray if in_channels == 1 else gray.expand(in_channels, -1, -1).contiguous()


def preprocess_for_model(array: np.ndarray, card: ModelCard) -> torch.Tensor:
    """One decoded radiograph -> the model's ``(in_channels, H, W)`` input, as scoring and the app build it."""
    return CxrInputTransform(card)(stored_for_card(array, card))


def stored_for_card(array: np.ndarray, card: ModelCard) -> np.ndarray:
    """A decoded radiograph as the card's uint8 stored image (its ``stored_size`` and ``crop``)."""
    return to_stored(array, card.stored_size, card.crop)

