"""Chest X-ray training data: a preprocessing cache and one Dataset for both sources.

``prepare_cxr_cache`` decodes every image of an index once into a uint8
memory-mapped array (``to_stored``), so that epochs never re-decode 1024x1024
PNGs. ``CxrDataset`` reads either the cache or the images themselves; both go
through ``to_stored`` (with the card's ``stored_size`` and ``crop``) then the
card's ``CxrInputTransform``, so they give identical tensors, and the same
ones ``score`` and the app build for that card.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from medres.data.chestxray14 import LABELS
from medres.errors import MedresError, UsageError
from medres.io import read_image
from medres.models.card import CROPS
from medres.transforms.cxr import CxrInputTransform, to_stored

CACHE_VERSION = 1


class StoredImageCache:
    """A prepared cache: ``images.u8`` (N x S x S uint8, memory-mapped) and its row index."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        info_path = self.folder / "cache.json"
        if not info_path.is_file():
            raise UsageError("not a medres preprocessing cache (no cache.json); run `medres prepare cxr`",
                             path=self.folder)
        self.info = json.loads(info_path.read_text())
        self.size = int(self.info["size"])
        self.crop = str(self.info.get("crop", "none"))  # caches written before crops existed kept whole images
        names = (self.folder / "images.txt").read_text().split()
        failed = {item["image"] for item in self.info.get("failed", [])}
        self.row_of = {name: row for row, name in enumerate(names) if name not in failed}
        self.images = np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r",
                                shape=(len(names), self.size, self.size))

    @property
    def failed(self) -> list[dict]:
        """Images that could not be decoded (``image``, ``error``); they are not in the cache."""
        return list(self.info.get("failed", []))

    def __contains__(self, image_name: str) -> bool:
        return image_name in self.row_of

    def stored(self, image_name: str) -> np.ndarray:
        """The uint8 stored image of ``image_name``."""
        return np.asarray(self.images[self.row_of[image_name]])


class CxrDataset(Dataset):
    """(input tensor, 14 labels) pairs from a ChestX-ray14 table, from the cache or the files.

    Images are stored as the transform's card says: its ``crop``, and its
    ``stored_size`` unless a cache (its own size) or ``stored_size`` says otherwise.

    Args:
        table: Rows of ``ChestXray14Index.table`` (``image``, ``path``, label columns).
        transform: The card's input transform (with augmentation for training).
        cache: A prepared cache holding every image of ``table``; None reads the files.
        stored_size: Intermediate size when reading files; None (the default) takes the card's.

    Raises:
        UsageError: The cache lacks images of ``table`` or was cropped otherwise than the card says.
    """

    def __init__(self, table: pd.DataFrame, transform: CxrInputTransform, cache: StoredImageCache | None = None,
                 stored_size: int | None = None):
        self.images = table["image"].tolist()
        self.paths = table["path"].tolist()
        self.labels = torch.tensor(table[list(LABELS)].to_numpy(dtype=np.float32))
        self.transform = transform
        self.cache = cache
        self.crop = transform.card.crop
        if cache is not None:
            stored_size = cache.size
        self.stored_size = stored_size if stored_size is not None else transform.card.stored_size
        self.epoch = 0
        if cache is not None:
            self._check_cache(cache)

    def _check_cache(self, cache: StoredImageCache) -> None:
        missing = [name for name in self.images if name not in cache]
        if missing:
            raise UsageError(f"{len(missing)} images (e.g. {missing[0]}) are not in the cache; "
                             "re-run `medres prepare cxr`", path=cache.folder)
        if cache.crop != self.crop:
            raise UsageError(f"the cache holds images cropped {cache.crop!r} but the model's card says "
                             f"crop {self.crop!r}; prepare a cache with crop {self.crop!r} or read the files",
                             path=cache.folder)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation depends on (seed, epoch, index); set before each epoch's iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def stored(self, index: int) -> np.ndarray:
        if self.cache is not None:
            return self.cache.stored(self.images[index])
        return to_stored(read_image(self.paths[index]).array, self.stored_size, self.crop)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.stored(index), index=index, epoch=self.epoch), self.labels[index]


def table_fingerprint(table: pd.DataFrame) -> str:
    """A short hash of which images (and labels) a model saw: recorded in its card."""
    columns = ["image", "split", *LABELS]
    text = table[columns].sort_values("image").to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_cxr_cache(table: pd.DataFrame, out_dir: str | os.PathLike[str], size: int = 256,
                      workers: int = 2, progress: bool = True, crop: str = "none") -> StoredImageCache:
    """Decode every image in ``table`` once into ``out_dir`` (reused when already complete).

    The cache is written into a temporary sibling folder and renamed into place,
    so an interrupted run never leaves a half cache that looks valid.

    Args:
        crop: The crop of the cards the cache will serve (one of :data:`~medres.models.card.CROPS`);
            recorded in ``cache.json``, and a dataset for a card with another crop refuses the cache.
    """
    if crop not in CROPS:
        raise UsageError(f"crop {crop!r} is not one of {', '.join(CROPS)}")
    out_dir = Path(out_dir)
    names = table["image"].tolist()
    crop_suffix = "" if crop == "none" else f"\n{crop}"  # caches prepared before crops existed stay valid
    fingerprint = hashlib.sha256(("\n".join(names) + f"\n{size}{crop_suffix}").encode()).hexdigest()[:16]
    if (out_dir / "cache.json").is_file():
        existing = json.loads((out_dir / "cache.json").read_text())
        if existing.get("fingerprint") == fingerprint and existing.get("version") == CACHE_VERSION:
            return StoredImageCache(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    images = np.memmap(staging / "images.u8", dtype=np.uint8, mode="w+", shape=(len(names), size, size))
    failures = _decode_into(images, names, table["path"].tolist(), size, crop, workers, progress)
    images.flush()
    del images
    (staging / "images.txt").write_text("\n".join(names) + "\n")
    info = {"version": CACHE_VERSION, "size": size, "crop": crop, "count": len(names), "fingerprint": fingerprint,
            "failed": failures}
    (staging / "cache.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(staging, out_dir)
    return StoredImageCache(out_dir)


def _decode_into(images: np.memmap, names: Sequence[str], paths: Sequence[str], size: int, crop: str,
                 workers: int, progress: bool) -> list[dict]:
    failures: list[dict] = []
    chunk = max(1, min(64, len(paths) // max(1, workers * 8)))
    arguments = [(path, size, crop) for path in paths]
    # Spawned (not forked) single-threaded workers: a fork taken while torch's OpenMP threads run can
    # deadlock the child inside its first parallel region.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context, initializer=_single_threaded) as pool:
        results = pool.map(_stored_or_error, arguments, chunksize=chunk)
        for row, (stored, error) in enumerate(tqdm(results, total=len(paths), desc="decoding images",
                                                   unit="img", disable=not progress)):
            if error is not None:
                failures.append({"image": names[row], "error": error})
            else:
                images[row] = stored
    return failures


def _single_threaded() -> None:
    torch.set_num_threads(1)


def _stored_or_error(argument: tuple[str, int, str]) -> tuple[np.ndarray | None, str | None]:
    path, size, crop = argument
    try:
        return to_stored(read_image(path).array, size, crop), None
    except MedresError as error:
        return None, error.one_line()
