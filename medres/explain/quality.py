"""How well class activation maps localise and how faithful they are.

Boxes use NIH's ``BBox_List_2017.csv`` convention: ``(x, y, w, h)`` in pixels
of the image the box was drawn on, x to the right, y down; maps must be on
that same pixel grid (see :meth:`medres.explain.CamResult.on_original`).

* **Pointing game** (Zhang et al. 2016): a hit when the map's maximum lies in
  the box grown by a tolerance, which forgives the coarse (stride-32) grid.
* **Intersection over box** (IoBB, Wang et al. 2017, "ChestX-ray8"): the
  fraction of the top ``k`` % map area that lies inside the box; 1.0 means the
  hottest region is entirely inside the finding.
* **Confidence drop** (faithfulness): the class probability minus the
  probability after the top 20 % map region is replaced by the image mean. A
  map that points at what the model uses gives a large drop, larger than
  masking a random region of the same size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from medres.errors import UsageError
from medres.explain.gradcam import explain
from medres.inference import output_activation
from medres.transforms.cxr import preprocess_for_model

Box = tuple[float, float, float, float]
DEFAULT_TOP_FRACTION = 0.2


def pointing_game(cam: np.ndarray, box: Box, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum falls inside ``box`` grown by ``tolerance`` pixels.

    Ties count as a hit when any maximal pixel is inside; an all-zero map (no
    evidence at all) is a miss, not a lucky hit.

    Args:
        cam: ``(rows, cols)`` map on the box's pixel grid.
        box: ``(x, y, w, h)`` in pixels.
        tolerance: Pixels added on every side of the box.
    """
    cam = np.asarray(cam, dtype=np.float64)
    peak = cam.max()
    if not np.isfinite(peak) or peak <= 0:
        return False
    rows, cols = np.nonzero(cam >= peak)
    x, y, w, h = box
    inside = ((cols + 0.5 >= x - tolerance) & (cols + 0.5 <= x + w + tolerance)
              & (rows + 0.5 >= y - tolerance) & (rows + 0.5 <= y + h + tolerance))
    return bool(inside.any())


def intersection_over_box(cam: np.ndarray, box: Box, top_fraction: float = DEFAULT_TOP_FRACTION) -> float:
    """Fraction of the map's top ``top_fraction`` area that lies inside ``box`` (IoBB).

    Returns 0.0 for an all-zero map.
    """
    top = top_region(np.asarray(cam, dtype=np.float64), top_fraction)
    if not top.any():
        return 0.0
    return float((top & box_mask(top.shape, box)).sum() / top.sum())


def top_region(cam: np.ndarray, fraction: float = DEFAULT_TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` of pixels with the highest values (ties broken by order).

    Exactly ``round(fraction * size)`` pixels are chosen, so a flat map still
    gives a region of the promised size; only strictly positive pixels count.
    """
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"the top-region fraction must be in (0, 1], got {fraction}")
    flat = np.asarray(cam).ravel()
    count = max(1, int(round(fraction * flat.size)))
    order = np.argsort(-flat, kind="stable")[:count]
    mask = np.zeros(flat.size, dtype=bool)
    mask[order] = True
    return (mask & (flat > 0)).reshape(np.shape(cam))


def box_mask(shape: tuple[int, int], box: Box) -> np.ndarray:
    """Pixels whose centres lie inside ``(x, y, w, h)``."""
    rows, cols = np.indices(shape)
    x, y, w, h = box
    return (cols + 0.5 >= x) & (cols + 0.5 <= x + w) & (rows + 0.5 >= y) & (rows + 0.5 <= y + h)


@torch.no_grad()
def confidence_drop(
    model: nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    fraction: float = DEFAULT_TOP_FRACTION,
    regions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Probability drop per (image, target) when the top ``fraction`` map region is masked.

    The region is replaced by the image's mean (in the model's input space), so
    the masked image keeps its overall brightness and only loses the content.

    Args:
        model: The classifier that produced the maps (evaluated in eval mode; ``model.card`` gives its
            output activation).
        inputs: ``(B, C, H, W)`` preprocessed images.
        maps: ``(B, K, H, W)`` maps at input resolution.
        targets: ``(B, K)`` class index of each map.
        fraction: Share of pixels masked.
        regions: Optional ``(B, K, H, W)`` boolean masks to use instead of the
            maps' top regions (e.g. random regions, as a baseline).

    Returns:
        ``(B, K)`` original minus masked probability of each target class.
    """
    activation = output_activation(model.card)
    was_training = model.training
    model.eval()
    try:
        before = activation(model(inputs)).gather(1, targets)
        drops = torch.empty(targets.shape)
        for column in range(targets.shape[1]):
            region = regions[:, column] if regions is not None else torch.from_numpy(
                np.stack([top_region(item.numpy(), fraction) for item in maps[:, column]]))
            masked = _mask_with_mean(inputs, region)
            after = activation(model(masked)).gather(1, targets[:, column:column + 1])[:, 0]
            drops[:, column] = before[:, column] - after
    finally:
        model.train(was_training)
    return drops


def random_regions(shape: Sequence[int], fraction: float = DEFAULT_TOP_FRACTION, seed: int = 0) -> torch.Tensor:
    """Random boolean masks of ``shape`` ``(B, K, H, W)`` covering ``fraction`` of pixels each."""
    generator = np.random.default_rng(seed)
    return torch.from_numpy(top_region_stack(generator.random(tuple(shape)), fraction))


def top_region_stack(values: np.ndarray, fraction: float) -> np.ndarray:
    """:func:`top_region` applied to every ``(H, W)`` map of a stacked array."""
    flat = values.reshape(-1, *values.shape[-2:])
    return np.stack([top_region(item, fraction) for item in flat]).reshape(values.shape)


def _mask_with_mean(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    means = inputs.mean(dim=(1, 2, 3), keepdim=True).expand_as(inputs)
    return torch.where(region[:, None].to(inputs.device), means, inputs)


def evaluate_boxes(
    model: nn.Module,
    images: Mapping[str, np.ndarray],
    boxes: pd.DataFrame,
    method: str = "gradcam",
    tolerance: float = 0.0,
    top_fraction: float = DEFAULT_TOP_FRACTION,
) -> pd.DataFrame:
    """Pointing game and IoBB for every box of ``boxes`` (``image, label, x, y, w, h``).

    Each image is explained once for all its boxed labels; maps are measured on
    the image's own pixel grid, where the boxes are (with the card's crop
    undone: outside a centre-square crop a map is 0).

    Args:
        model: A registered classifier.
        images: Decoded radiographs ``(1, rows, cols)`` by image name.
        boxes: One row per finding box, as ``ChestXray14Index.boxes``.
        method: ``"gradcam"`` or ``"gradcam++"``.
        tolerance: Pointing-game tolerance in pixels of the image.
        top_fraction: Share of the map taken as its region for IoBB.

    Returns:
        ``image, label, probability, hit, iobb`` per box.
    """
    rows = []
    for name, group in boxes.groupby("image", sort=False):
        array = images[name]
        inputs = preprocess_for_model(array, model.card)[None]
        result = explain(model, inputs, targets=[list(group["label"])], method=method)
        cams = result.on_original(0, tuple(array.shape[-2:]), normalized=False, crop=model.card.crop)
        for column, box in enumerate(group.itertuples(index=False)):
            region = (box.x, box.y, box.w, box.h)
            rows.append({"image": name, "label": box.label,
                         "probability": float(result.probabilities[0, result.targets[0, column]]),
                         "hit": pointing_game(cams[column], region, tolerance),
                         "iobb": intersection_over_box(cams[column], region, top_fraction)})
    return pd.DataFrame(rows, columns=["image", "label", "probability", "hit", "iobb"])
