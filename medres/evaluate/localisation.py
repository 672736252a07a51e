"""Grad-CAM localisation against ChestX-ray14's boxes, for ``medres eval cxr``.

Every box of ``BBox_List_2017.csv`` on an image of the evaluated split is
scored, whether or not the model calls that finding positive (a map that only
had to point where the model is already confident would flatter the maps).
Each (image, boxed label) is one row of
a batch, explained for its own label (in eval mode images do not interact, so
this gives the maps :func:`medres.explain.evaluate_boxes` gives image by image).
Maps are measured on the radiograph's own pixel grid, where NIH drew the boxes,
with the measures of :mod:`medres.explain.quality`:

- **Pointing game** (Zhang et al. 2016): the map's maximum inside the box grown
  by 15 pixels per 224 of the image's longer side (their tolerance at their
  input size, scaled to the image). Beside it, the same game for a map that
  peaks at the image centre: findings cluster in the lungs, so a hit rate is
  only worth what it adds to that baseline.
- **Intersection over box** (IoBB, Wang et al. 2017): the share of the map's
  top 20 % pixels that lie inside the box.
- **Confidence drop**: the probability lost when the top 20 % map region (at the
  model's input size) is replaced by the image mean, against a seeded random
  region of the same size; a faithful map costs more than a random one.

NIH's box file spells Infiltration as ``Infiltrate``;
:func:`medres.data.chestxray14.read_boxes` reads those boxes as Infiltration.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from medres.data.chestxray14 import BOX_FILE, ChestXray14Index
from medres.errors import MedresError, UsageError
from medres.evaluate.plots import GalleryPanel, localisation_gallery_png
from medres.explain import (
    METHODS,
    CamResult,
    confidence_drop,
    explain,
    intersection_over_box,
    pointing_game,
    random_regions,
)
from medres.explain.quality import DEFAULT_TOP_FRACTION
from medres.io import read_image
from medres.models import ModelCard
from medres.transforms.cxr import preprocess_for_model

POINTING_TOLERANCE_PER_SIDE = 15 / 224
"""Pointing-game tolerance as a share of the image's longer side: Zhang et al.'s 15 pixels at 224."""
TOP_FRACTION = DEFAULT_TOP_FRACTION
RANDOM_REGION_SEED = 0
GALLERY_SIZE = 8
MAX_BATCH_SIZE = 16  # Grad-CAM keeps every activation for the backward pass
GALLERY_NAME = "localisation_gallery.png"
TABLE_NAME = "localisation.csv"
TURNED_OFF = "turned off (--no-localisation)"
SPELLING_NOTE = ("NIH's BBox_List_2017.csv spells Infiltration as `Infiltrate`; those boxes are counted as "
                 "Infiltration.")
MEASURES: tuple[tuple[str, str], ...] = (
    ("pointing_game", "hit"), ("centre_baseline", "centre_hit"), ("mean_iobb", "iobb"),
    ("confidence_drop_cam", "cam_drop"), ("confidence_drop_random", "random_drop"),
)
"""(summary field, per-box column it averages)."""
TABLE_COLUMNS: tuple[str, ...] = (
    "image", "label", "x", "y", "w", "h", "probability", "tolerance_px", "hit", "centre_hit", "iobb", "cam_drop",
    "random_drop",
)


@dataclass(frozen=True)
class LocalisationSettings:
    """How ``medres eval cxr`` measures localisation.

    Attributes:
        requested: True (``--localisation``: impossible is an error), False
            (``--no-localisation``) or None (on when the split has boxes).
        method: ``"gradcam"`` or ``"gradcam++"``.
        batch_size: Boxes per Grad-CAM pass (at most :data:`MAX_BATCH_SIZE`).
        progress: Show a progress bar.
        seed: Seed of the random regions of the confidence-drop baseline.
    """

    requested: bool | None = None
    method: str = "gradcam"
    batch_size: int = MAX_BATCH_SIZE
    progress: bool = True
    seed: int = RANDOM_REGION_SEED


@dataclass(frozen=True)
class LocalisationOutcome:
    """The ``localisation`` entry of metrics.json and the files it adds to the report folder."""

    summary: dict[str, Any]
    files: dict[str, bytes]


def localisation_skip_reason(index: ChestXray14Index, split: str, card: ModelCard,
                             settings: LocalisationSettings) -> str | None:
    """Why localisation will not be measured (None: it will); checked before any prediction.

    Raises:
        UsageError: ``--localisation`` was given but cannot be honoured.
    """
    if settings.requested is False:
        return TURNED_OFF
    if settings.method not in METHODS:
        raise UsageError(f"unknown Grad-CAM method {settings.method!r}; choose one of {', '.join(METHODS)}")
    reason = None
    if not (index.root / BOX_FILE).is_file():
        reason = f"the data folder has no {BOX_FILE}"
    elif not index.boxes["image"].isin(index.table.loc[index.table["split"] == split, "image"]).any():
        reason = f"no image of the `{split}` split has a box in {BOX_FILE}"
    elif not index.boxes["label"].isin(card.labels).any():
        reason = "the model predicts none of the boxed labels"
    elif not card.gradcam_layer:
        reason = "the model card names no Grad-CAM layer"
    if reason is not None and settings.requested:
        raise UsageError(f"--localisation cannot run: {reason}; leave it out or pass --no-localisation",
                         path=index.root)
    return reason


def measure_localisation(model: nn.Module, index: ChestXray14Index, evaluated: pd.DataFrame, split: str,
                         settings: LocalisationSettings, skip_reason: str | None) -> LocalisationOutcome:
    """Score every boxed finding of the evaluated images; the summary, per-box table and gallery.

    Args:
        model: The evaluated classifier.
        index: The data index (its ``boxes``, canonical label spelling).
        evaluated: The evaluated split's rows (``image``, ``path``).
        split: The evaluated split's name, for the report.
        settings: Method, batch size, progress bar and seed.
        skip_reason: From :func:`localisation_skip_reason`; when set, nothing is computed.
    """
    if skip_reason is not None:
        return LocalisationOutcome({"measured": False, "reason": skip_reason}, {})
    boxes = index.boxes.merge(evaluated[["image", "path"]], on="image")
    predicted = boxes["label"].isin(model.card.labels)
    boxes = boxes[predicted].sort_values("image", kind="stable").reset_index(drop=True)
    if boxes.empty:
        return LocalisationOutcome({"measured": False, "reason": "none of the boxed images was evaluated"}, {})
    gallery_rows = choose_gallery_rows(boxes, GALLERY_SIZE)
    table, panels, n_unreadable = score_boxes(model, boxes, settings, gallery_rows)
    if table.empty:
        return LocalisationOutcome({"measured": False,
                                    "reason": f"none of the {len(boxes)} boxed images could be read"}, {})
    summary = summarise(table, list(model.card.labels))
    summary.update(measured=True, reason=None, split=split, method=settings.method, box_file=BOX_FILE,
                   n_boxes_skipped={"label_not_predicted": int((~predicted).sum()), "unreadable_image": n_unreadable},
                   settings=describe_settings(settings, table), label_spelling_note=SPELLING_NOTE,
                   gallery=GALLERY_NAME if panels else None, table=TABLE_NAME)
    files = {TABLE_NAME: table.to_csv(index=False).encode()}
    if panels:
        files[GALLERY_NAME] = localisation_gallery_png(panels, f"{split} split: Grad-CAM ({settings.method}) "
                                                       "and NIH boxes")
    return LocalisationOutcome(summary, files)


def choose_gallery_rows(boxes: pd.DataFrame, size: int) -> list[int]:
    """Up to ``size`` box rows: the first box of each label first (so the labels vary), then the next ones."""
    first_per_label = boxes.drop_duplicates("label").index.tolist()
    chosen = set(first_per_label)
    others = [row for row in boxes.index if row not in chosen]
    return sorted((first_per_label + others)[:size])


def score_boxes(model: nn.Module, boxes: pd.DataFrame, settings: LocalisationSettings,
                gallery_rows: Sequence[int]) -> tuple[pd.DataFrame, list[GalleryPanel], int]:
    """Per-box measures, batch by batch; the gallery's panels; how many boxes had an unreadable image."""
    batch_size = max(1, min(settings.batch_size, MAX_BATCH_SIZE))
    records: list[dict[str, Any]] = []
    panels: list[GalleryPanel] = []
    n_unreadable = 0
    with tqdm(total=len(boxes), desc="Grad-CAM on boxes", unit="box", disable=not settings.progress) as bar:
        for batch in _batches(boxes, batch_size):
            arrays = _read_images(batch)
            readable = batch[batch["image"].isin(arrays)]
            n_unreadable += len(batch) - len(readable)
            if len(readable):
                records += _score_batch(model, readable, arrays, settings, set(gallery_rows), panels)
            bar.update(len(batch))
    return pd.DataFrame(records, columns=list(TABLE_COLUMNS)), panels, n_unreadable


def _batches(boxes: pd.DataFrame, batch_size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(boxes), batch_size):
        yield boxes.iloc[start:start + batch_size]


def _read_images(batch: pd.DataFrame) -> dict[str, np.ndarray]:
    """Decoded radiographs of the batch by image name; unreadable ones are left out (and counted by the caller)."""
    arrays = {}
    for name, path in batch[["image", "path"]].drop_duplicates("image").itertuples(index=False):
        try:
            arrays[name] = read_image(path).array
        except MedresError:
            continue
    return arrays


def _score_batch(model: nn.Module, batch: pd.DataFrame, arrays: dict[str, np.ndarray],
                 settings: LocalisationSettings, gallery_rows: set[int],
                 panels: list[GalleryPanel]) -> list[dict[str, Any]]:
    """Maps, the three measures and the centre baseline for one batch of boxes (one row per box)."""
    card = model.card
    device = next(model.parameters()).device
    inputs = torch.stack([preprocess_for_model(arrays[name], card) for name in batch["image"]]).to(device)
    result = explain(model, inputs, targets=list(batch["label"]), method=settings.method)
    targets = result.targets.to(device)
    cam_drops = confidence_drop(model, inputs, result.maps, targets, TOP_FRACTION)
    random_drops = confidence_drop(model, inputs, result.maps, targets, TOP_FRACTION,
                                   regions=_random_regions(batch.index, result.maps.shape[-2:], settings.seed))
    records = []
    for position, (row, box) in enumerate(zip(batch.index, batch.itertuples(index=False))):
        shape = tuple(arrays[box.image].shape[-2:])
        cam = maps_on_original(result, position, shape, card, normalized=False)
        region, tolerance = (box.x, box.y, box.w, box.h), POINTING_TOLERANCE_PER_SIDE * max(shape)
        records.append({
            "image": box.image, "label": box.label, "x": box.x, "y": box.y, "w": box.w, "h": box.h,
            "probability": float(result.probabilities[position, result.targets[position, 0]]),
            "tolerance_px": tolerance, "hit": pointing_game(cam, region, tolerance),
            "centre_hit": pointing_game(centre_map(shape), region, tolerance),
            "iobb": intersection_over_box(cam, region, TOP_FRACTION),
            "cam_drop": float(cam_drops[position, 0]), "random_drop": float(random_drops[position, 0]),
        })
        if row in gallery_rows:
            panels.append(_gallery_panel(records[-1], arrays[box.image], cam,
                                         maps_on_original(result, position, shape, card, normalized=True)))
    return records


def _random_regions(rows: Sequence[int], size: Sequence[int], seed: int) -> torch.Tensor:
    """``(B, 1, H, W)`` random regions, each seeded by its box's row, so they do not depend on the batch size."""
    return torch.cat([random_regions((1, 1, *size), TOP_FRACTION, seed=seed + int(row)) for row in rows])


def maps_on_original(result: CamResult, position: int, shape: tuple[int, int], card: ModelCard,
                     normalized: bool) -> np.ndarray:
    """Image ``position``'s map on its original ``(rows, cols)`` grid, undoing the card's crop.

    With ``crop="center_square"`` the model saw only the image's centred
    square: the map is sampled onto that square and placed there; pixels the
    model never saw get 0 (no evidence). :meth:`CamResult.on_original` does it
    (:func:`medres.explain.region_seen_by_model`, the one place the crop is undone).
    """
    return result.on_original(position, shape, normalized=normalized, crop=card.crop)[0]


def centre_map(shape: tuple[int, int]) -> np.ndarray:
    """The baseline "map": zero everywhere but the image's centre pixel."""
    cam = np.zeros(shape)
    cam[shape[0] // 2, shape[1] // 2] = 1.0
    return cam


def _gallery_panel(record: dict[str, Any], array: np.ndarray, cam: np.ndarray, shown: np.ndarray) -> GalleryPanel:
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape) if cam.max() > 0 else None
    return GalleryPanel(image=np.asarray(array[0], dtype=np.float32), cam=shown,
                        box=(record["x"], record["y"], record["w"], record["h"]), label=record["label"],
                        probability=record["probability"], hit=bool(record["hit"]), iobb=record["iobb"],
                        peak=None if peak is None else (int(peak[0]), int(peak[1])), tolerance=record["tolerance_px"])


def summarise(table: pd.DataFrame, labels: Sequence[str]) -> dict[str, Any]:
    """Each measure's mean per label (model order, labels with boxes only) and over every box, with counts."""
    per_label = {label: _measures(table[table["label"] == label]) for label in labels
                 if (table["label"] == label).any()}
    return {"overall": _measures(table), "per_label": per_label}


def _measures(rows: pd.DataFrame) -> dict[str, Any]:
    values: dict[str, Any] = {"n_boxes": len(rows), "n_images": int(rows["image"].nunique())}
    for field, column in MEASURES:
        values[field] = float(rows[column].astype(float).mean()) if len(rows) else None
    return values


def describe_settings(settings: LocalisationSettings, table: pd.DataFrame) -> dict[str, Any]:
    """The stated conventions: tolerance rule and range in pixels, top fraction, seed."""
    tolerances = table["tolerance_px"] if len(table) else pd.Series([np.nan])
    return {"pointing_tolerance_per_side": POINTING_TOLERANCE_PER_SIDE,
            "pointing_tolerance_rule": "15 px per 224 px of the image's longer side (Zhang et al. 2016)",
            "pointing_tolerance_px": [float(tolerances.min()), float(tolerances.max())],
            "top_fraction": TOP_FRACTION, "random_region_seed": settings.seed,
            "maps": "raw Grad-CAM sampled onto each radiograph's own pixel grid; every boxed positive counts, "
                    "whatever the model's probability"}
