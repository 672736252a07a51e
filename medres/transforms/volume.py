"""CT/MRI volume preprocessing, built from the model card in one place.

Every volume a 3D model sees goes through :func:`prepare_volume`: the reader
has already put it in RAS+ voxel order; intensities are normalised as the
card's ``normalization`` says, then the volume is resampled to the card's
``spacing`` with MONAI's ``Spacing`` (the affine is carried along, so the way
back onto the input grid, :func:`resample_onto_grid`, is exact in patient
millimetres, oblique grids included). Training, validation, ``medres
segment`` and ``medres eval seg`` all call these functions, so their
preprocessing cannot drift apart.

Normalisation follows nnU-Net: CT intensities are clipped to the 0.5/99.5
percentiles of the training set's foreground voxels and z-scored with that
foreground's mean and standard deviation (HU are absolute, so one set of
numbers fits every scan); MR and other modalities are z-scored per image
(their scale is arbitrary per acquisition).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medres.errors import InvalidModelCardError
from medres.models.card import ModelCard

if TYPE_CHECKING:
    from monai.data import MetaTensor

SAME_GRID_TOLERANCE = 1e-3  # affine entries (mm) within which MONAI's resamplers return the input unchanged
CT_CLIP_PERCENTILES: tuple[float, float] = (0.5, 99.5)
FOREGROUND_SAMPLES_PER_CASE = 10_000
CT_KIND, ZSCORE_KIND = "ct_clip_zscore", "zscore_per_image"
_MINIMUM_STD = 1e-6


@dataclass(frozen=True)
class PreparedVolume:
    """A volume ready for the network: ``(C, X, Y, Z)`` float32 and its voxel -> RAS affine."""

    array: np.ndarray
    affine: np.ndarray


def channel_normalization(modality: str, foreground_values: np.ndarray | None) -> dict[str, Any]:
    """The normalisation of one channel, from its modality and training foreground intensities.

    Args:
        modality: "CT" gets global clipping and z-scoring; anything else per-image z-scoring.
        foreground_values: Intensities sampled inside the labels of the training cases (CT only).
    """
    if modality.upper() != "CT":
        return {"kind": ZSCORE_KIND}
    if foreground_values is None or foreground_values.size == 0:
        raise InvalidModelCardError("CT normalisation needs foreground intensities; are all labels empty?")
    low, high = np.percentile(foreground_values, CT_CLIP_PERCENTILES)
    clipped = np.clip(foreground_values, low, high)
    return {"kind": CT_KIND, "clip_low": float(low), "clip_high": float(high),
            "mean": float(clipped.mean()), "std": float(max(clipped.std(), _MINIMUM_STD))}


def volume_normalization(channels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The card's ``normalization`` for a 3D model: one entry per input channel."""
    return {"kind": "per_channel", "channels": [dict(channel) for channel in channels]}


def sample_foreground(array: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                      n_samples: int = FOREGROUND_SAMPLES_PER_CASE) -> np.ndarray:
    """Up to ``n_samples`` intensities of one channel ``(X, Y, Z)`` inside the labels (nnU-Net's fingerprint)."""
    values = array[label > 0]
    if values.size > n_samples:
        values = rng.choice(values, n_samples, replace=False)
    return values.astype(np.float32)


def normalize_intensities(array: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Apply the card's per-channel normalisation to a ``(C, X, Y, Z)`` array (returns a new array)."""
    channels = normalization.get("channels")
    if normalization.get("kind") != "per_channel" or not channels or len(channels) != array.shape[0]:
        raise InvalidModelCardError(f"the card's normalization {normalization} does not describe the "
                                    f"{array.shape[0]} input channel(s) of a volume")
    return np.stack([_normalize_channel(values, spec) for values, spec in zip(array, channels)]).astype(np.float32)


def _normalize_channel(values: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    if spec["kind"] == CT_KIND:
        clipped = np.clip(values, spec["clip_low"], spec["clip_high"])
        return (clipped - spec["mean"]) / spec["std"]
    if spec["kind"] == ZSCORE_KIND:
        return (values - values.mean()) / max(float(values.std()), _MINIMUM_STD)
    raise InvalidModelCardError(f"unknown intensity normalisation {spec['kind']!r}; "
                                f"known: {CT_KIND}, {ZSCORE_KIND}")


def _meta_tensor(array: np.ndarray | torch.Tensor, affine: np.ndarray) -> MetaTensor:
    from monai.data import MetaTensor

    tensor = torch.as_tensor(array, dtype=torch.float32)
    return MetaTensor(tensor, affine=torch.as_tensor(np.asarray(affine), dtype=torch.float64))


def resample_to_spacing(array: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                        mode: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Resample ``(C, X, Y, Z)`` to ``spacing`` mm, keeping the first voxel's centre and the axis directions.

    Args:
        array: Channel-first volume.
        affine: Its voxel -> RAS affine.
        spacing: Target mm per axis (in the array's axis order).
        mode: "bilinear" for intensities, "nearest" for labels.

    Returns:
        The resampled array (float32) and its affine.
    """
    current = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    if np.allclose(current, spacing, rtol=1e-6, atol=0):
        return np.asarray(array, np.float32), np.asarray(affine, np.float64)
    from monai.transforms import Spacing  # MONAI (seconds to import) only when there is something to resample

    resampled = Spacing(pixdim=tuple(spacing), mode=mode, padding_mode="border")(_meta_tensor(array, affine))
    return resampled.as_tensor().numpy(), resampled.affine.numpy().astype(np.float64)


def on_same_grid(shape: Sequence[int], affine: np.ndarray, target_shape: Sequence[int],
                 target_affine: np.ndarray) -> bool:
    """Whether two voxel grids are the same: equal shapes, affines within :data:`SAME_GRID_TOLERANCE`."""
    return tuple(shape) == tuple(target_shape) and np.allclose(np.asarray(affine), np.asarray(target_affine),
                                                               rtol=0, atol=SAME_GRID_TOLERANCE)


def resample_onto_grid(array: np.ndarray | torch.Tensor, affine: np.ndarray, target_affine: np.ndarray,
                       target_shape: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resample ``(C, ...)`` from its grid onto another (the input's) grid, by the two affines.

    Used to bring probabilities from the model's spacing back onto the scan the
    user gave, so the result overlays the input voxel for voxel. A volume
    already on the target grid is returned as it is, as MONAI's
    ``SpatialResample`` returns it.
    """
    if on_same_grid(array.shape[1:], affine, target_shape, target_affine):
        return torch.as_tensor(array, dtype=torch.float32)
    from monai.transforms import SpatialResample

    resampled = SpatialResample(mode=mode, padding_mode="border")(
        _meta_tensor(array, affine), dst_affine=torch.as_tensor(np.asarray(target_affine), dtype=torch.float64),
        spatial_size=tuple(int(size) for size in target_shape))
    return resampled.as_tensor()


def prepare_volume(array: np.ndarray, affine: np.ndarray, card: ModelCard) -> PreparedVolume:
    """Normalise (as the card says), then resample to the card's spacing: the network's input."""
    if card.spacing is None:
        raise InvalidModelCardError(f"model {card.name!r} has no spacing in its card; it is not a volume model")
    normalized = normalize_intensities(np.asarray(array, np.float32), card.normalization)
    resampled, new_affine = resample_to_spacing(normalized, affine, card.spacing, mode="bilinear")
    return PreparedVolume(resampled, new_affine)


def prepare_label(label: np.ndarray, affine: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """A ``(X, Y, Z)`` label map resampled (nearest) to ``spacing``, as uint8."""
    resampled, _ = resample_to_spacing(label[None].astype(np.float32), affine, spacing, mode="nearest")
    return np.rint(resampled[0]).astype(np.uint8)

