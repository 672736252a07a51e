"""Preprocess each training volume once: a data-set fingerprint and a keyed ``.npy`` cache.

Reading a DICOM series or a gzipped NIfTI and resampling it costs far more
than a training step on a patch of it, so epochs must not redo it. As in
nnU-Net, training starts with a *fingerprint* pass (every case read once:
spacing, shape, foreground intensities), which fixes the target spacing
(per-axis median) and the intensity normalisation; then every case is
preprocessed with the resulting card and stored as ``.npy`` files that
patches are cut from through memory maps.

Both are keyed by a hash of the settings and of the case files' names, sizes
and modification times, so a changed file, spacing or normalisation gets a
fresh folder instead of stale arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medres.atomic import write_text_atomically, write_with_atomically
from medres.data.volumes import VolumeCase, VolumeDataset, label_volume, read_case
from medres.models.card import ModelCard
from medres.transforms.volume import (
    channel_normalization,
    prepare_label,
    prepare_volume,
    sample_foreground,
    volume_normalization,
)

CACHE_VERSION = 1


@dataclass(frozen=True)
class DatasetFingerprint:
    """What training needs to know about a data set before it builds the model's card."""

    median_spacing: tuple[float, float, float]
    normalization: dict[str, Any]
    n_cases: int
    files_hash: str

    def to_json(self) -> str:
        return json.dumps({"median_spacing": self.median_spacing, "normalization": self.normalization,
                           "n_cases": self.n_cases, "files_hash": self.files_hash}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> DatasetFingerprint:
        values = json.loads(text)
        return cls(tuple(values["median_spacing"]), values["normalization"], values["n_cases"], values["files_hash"])


def files_signature(cases: Sequence[VolumeCase]) -> str:
    """A hash of every case file's name, size and modification time (DICOM folders file by file)."""
    digest = hashlib.sha256()
    for case in cases:
        for path in (*case.images, *([case.label] if case.label else [])):
            for file in sorted(path.iterdir()) if path.is_dir() else [path]:
                status = file.stat()
                digest.update(f"{case.case_id}/{file.name}/{status.st_size}/{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def compute_fingerprint(dataset: VolumeDataset, cases: Sequence[VolumeCase], cache_root: Path,
                        progress: bool = True) -> DatasetFingerprint:
    """Median spacing and intensity normalisation of ``cases`` (read once; the result is cached).

    Raises:
        GeometryMismatchError: A case whose label does not share its image's grid (names the case).
    """
    files_hash = files_signature(cases)
    path = cache_root / f"fingerprint_{files_hash}.json"
    if path.is_file():
        return DatasetFingerprint.from_json(path.read_text())
    rng = np.random.default_rng(0)
    spacings, samples = [], [[] for _ in dataset.channel_names]
    for case in tqdm(cases, desc="fingerprint", unit="case", disable=not progress):
        image, label = read_case(case)
        # Without a label map (a classification-only data set), the whole image is the "foreground".
        labels = label_volume(label, case.case_id, len(dataset.labels)) if label is not None \
            else np.ones(image.spatial_shape, np.uint8)
        spacings.append(image.spacing)
        for channel, values in enumerate(image.array):
            samples[channel].append(sample_foreground(values, labels, rng))
    channels = [channel_normalization(name, np.concatenate(values) if values else None)
                for name, values in zip(dataset.channel_names, samples)]
    fingerprint = DatasetFingerprint(tuple(float(v) for v in np.median(np.asarray(spacings), axis=0)),
                                     volume_normalization(channels), len(cases), files_hash)
    _write_text_atomically(path, fingerprint.to_json())
    return fingerprint


class PreprocessedCases:
    """Cases preprocessed for one card, as ``<case>_image.npy`` / ``<case>_label.npy`` under a keyed folder.

    Args:
        cache_root: Parent folder; the arrays go into ``cache_root/<settings hash>/``.
        card: The model card whose spacing and normalisation apply.
        cases: The cases to hold.
    """

    def __init__(self, cache_root: Path, card: ModelCard, cases: Sequence[VolumeCase]):
        settings = {"version": CACHE_VERSION, "spacing": card.spacing, "normalization": card.normalization,
                    "files": files_signature(cases)}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.folder = cache_root / f"preprocessed_{key}"
        self.card, self.cases = card, {case.case_id: case for case in cases}

    def ensure(self, n_labels: int, progress: bool = True) -> PreprocessedCases:
        """Preprocess the cases not yet in the cache; returns ``self``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        todo = [case for case_id, case in self.cases.items() if not self._affine_path(case_id).is_file()]
        for case in tqdm(todo, desc="preprocessing", unit="case", disable=not progress or not todo):
            self._preprocess(case, n_labels)
        return self

    def _preprocess(self, case: VolumeCase, n_labels: int) -> None:
        image, label = read_case(case)
        prepared = prepare_volume(image.array, image.affine, self.card)
        _save_array_atomically(self.folder / f"{case.case_id}_image.npy", prepared.array)
        if label is not None:
            labels = prepare_label(label_volume(label, case.case_id, n_labels), label.affine, self.card.spacing)
            _save_array_atomically(self.folder / f"{case.case_id}_label.npy", labels)
        # Written last: its presence marks the case complete.
        _write_text_atomically(self._affine_path(case.case_id), json.dumps(prepared.affine.tolist()))

    def _affine_path(self, case_id: str) -> Path:
        return self.folder / f"{case_id}_affine.json"

    @property
    def case_ids(self) -> list[str]:
        return list(self.cases)

    def image(self, case_id: str) -> np.ndarray:
        """The preprocessed ``(C, X, Y, Z)`` float32 volume, memory-mapped."""
        return np.load(self.folder / f"{case_id}_image.npy", mmap_mode="r")

    def label(self, case_id: str) -> np.ndarray:
        """The ``(X, Y, Z)`` uint8 label map at the card's spacing, memory-mapped."""
        return np.load(self.folder / f"{case_id}_label.npy", mmap_mode="r")

    def affine(self, case_id: str) -> np.ndarray:
        return np.asarray(json.loads(self._affine_path(case_id).read_text()))


def _save_array_atomically(path: Path, array: np.ndarray) -> None:
    """torchrun ranks may preprocess the same case at once: each writes its own temporary file."""
    write_with_atomically(path, lambda temporary: np.save(temporary, array))


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, text)
