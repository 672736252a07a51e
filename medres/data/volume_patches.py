"""Training samples cut from preprocessed volumes: segmentation patches and classifier inputs.

Patches are drawn as nnU-Net does: a third of them (``foreground_fraction``)
centred on a voxel of a randomly chosen label present in the case (so small
organs are seen as often as large ones), the rest anywhere; regions outside
the volume are zero-padded (zero is the mean after normalisation). Mirroring
along ``mirror_axes`` is the only augmentation.

Every random choice derives from ``(seed, epoch, index)``, not from a global
generator, so a resumed run draws exactly the patches the uninterrupted run
would have drawn, whichever worker process serves the index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import ResizeWithPadOrCrop
from torch.utils.data import Dataset

from medres.data.volume_cache import PreprocessedCases

MAX_LOCATIONS_PER_LABEL = 10_000


def crop_with_padding(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[..., start:start+size]`` over the last three axes, zero where it leaves the array."""
    spatial = array.shape[-3:]
    source = tuple(slice(max(s, 0), min(s + n, dim)) for s, n, dim in zip(start, size, spatial))
    target = tuple(slice(src.start - s, src.stop - s) for src, s in zip(source, start))
    out = np.zeros(array.shape[:-3] + tuple(size), dtype=array.dtype)
    out[(..., *target)] = array[(..., *source)]
    return out


class SegmentationPatchDataset(Dataset):
    """``patches_per_epoch`` random ``(image (C, *patch), label (1, *patch))`` pairs per epoch.

    Args:
        store: Preprocessed cases (memory-mapped arrays).
        case_ids: The training cases to draw from.
        patch_size: Spatial patch size (the card's input size).
        patches_per_epoch: Length of one epoch in patches.
        foreground_fraction: Share of patches centred on a labelled voxel.
        mirror_axes: Spatial axes (0, 1, 2) flipped with probability 1/2 each.
        seed: Base of every random draw.
    """

    def __init__(self, store: PreprocessedCases, case_ids: Sequence[str], patch_size: Sequence[int],
                 patches_per_epoch: int, foreground_fraction: float = 1 / 3,
                 mirror_axes: Sequence[int] = (0, 1, 2), seed: int = 0):
        self.store, self.case_ids = store, list(case_ids)
        self.patch_size = tuple(int(size) for size in patch_size)
        self.patches_per_epoch, self.foreground_fraction = int(patches_per_epoch), float(foreground_fraction)
        self.mirror_axes, self.seed, self.epoch = tuple(mirror_axes), int(seed), 0
        self._locations: dict[str, dict[int, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.patches_per_epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        image, label = self.store.image(case_id), self.store.label(case_id)
        centre = self._centre(case_id, label, rng, on_foreground=rng.random() < self.foreground_fraction)
        start = [int(c) - size // 2 for c, size in zip(centre, self.patch_size)]
        image_patch = crop_with_padding(image, start, self.patch_size)
        label_patch = crop_with_padding(label[None], start, self.patch_size)
        for axis in self.mirror_axes:
            if rng.random() < 0.5:
                image_patch, label_patch = np.flip(image_patch, axis + 1), np.flip(label_patch, axis + 1)
        return torch.from_numpy(image_patch.copy()), torch.from_numpy(label_patch.astype(np.int64))

    def _centre(self, case_id: str, label: np.ndarray, rng: np.random.Generator, on_foreground: bool) -> np.ndarray:
        locations = self._label_locations(case_id, label)
        if on_foreground and locations:
            chosen = locations[sorted(locations)[int(rng.integers(len(locations)))]]
            return chosen[int(rng.integers(len(chosen)))]
        return np.array([int(rng.integers(size)) for size in label.shape])

    def _label_locations(self, case_id: str, label: np.ndarray) -> dict[int, np.ndarray]:
        """Up to 10,000 voxel positions per present label, computed once per case and process."""
        if case_id not in self._locations:
            rng = np.random.default_rng([self.seed, len(case_id)])
            found = {}
            for value in np.unique(label):
                if value == 0:
                    continue
                positions = np.argwhere(label == value)
                if len(positions) > MAX_LOCATIONS_PER_LABEL:
                    positions = positions[rng.choice(len(positions), MAX_LOCATIONS_PER_LABEL, replace=False)]
                found[int(value)] = positions
            self._locations[case_id] = found
        return self._locations[case_id]


class VolumeClassificationDataset(Dataset):
    """Whole volumes padded or cropped (centred) to the card's input size, with volume-level targets.

    Padding/cropping rather than resizing keeps millimetres as millimetres,
    so organ size (splenomegaly, say) remains visible to the classifier.
    """

    def __init__(self, store: PreprocessedCases, case_ids: Sequence[str], targets: dict[str, np.ndarray],
                 input_size: Sequence[int], mirror_axes: Sequence[int] = (), seed: int = 0):
        self.store, self.case_ids, self.targets = store, list(case_ids), targets
        self.fit_size = ResizeWithPadOrCrop(tuple(int(size) for size in input_size))
        self.mirror_axes, self.seed, self.epoch = tuple(mirror_axes), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        case_id = self.case_ids[int(index)]
        volume = self.fit_size(torch.from_numpy(np.array(self.store.image(case_id)))).as_tensor()
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        flips = [axis + 1 for axis in self.mirror_axes if rng.random() < 0.5]
        if flips:
            volume = torch.flip(volume, flips)
        return volume.contiguous(), torch.from_numpy(self.targets[case_id])

    @property
    def labels(self) -> torch.Tensor:
        """``(N, L)`` targets in dataset order (for class weights)."""
        return torch.from_numpy(np.stack([self.targets[case_id] for case_id in self.case_ids]))
