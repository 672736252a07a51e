"""``--heatmaps``: Grad-CAM PNGs for the classes each image is called positive for.

The maps come from :func:`medres.explain.explain` (Grad-CAM on the card's
``gradcam_layer``); this module only decides which classes to explain and
writes each as an 8-bit map on the model's input grid (0 = no evidence,
255 = the class probability's peak, as ``medres.explain`` scales it). That
grid covers what the card's ``crop`` keeps of the image: all of it, or, for a
``center_square`` model (a torchxrayvision import), its largest centred
square; the PNG's ``Crop`` text chunk says which, so a reader can place it
(:func:`medres.explain.region_seen_by_model`). Where
a PNG goes, ``heatmaps/<sop_pseudonym>/<Label>.png``, is defined once in
:func:`medres.score.folder.heatmap_file`, which the readers use too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from torch import nn

from medres.atomic import write_with_atomically
from medres.explain import explain
from medres.models.card import ModelCard
from medres.score.folder import heatmap_file

CROP_TEXT_KEY = "Crop"  # PNG text chunk: the card's crop, i.e. which part of the image the map covers


class HeatmapWriter:
    """Writes Grad-CAM PNGs for positive calls, batch by batch."""

    def __init__(self, folder: Path, explain: Callable[..., Any]) -> None:
        self.folder, self.explain = folder, explain

    def write(self, model: nn.Module, inputs: torch.Tensor, rows: Sequence[dict[str, Any]], card: ModelCard) -> int:
        """Explain each image's positive classes; returns the number of PNGs written."""
        written = 0
        for index, row in enumerate(rows):
            positives = [position for position, label in enumerate(card.labels) if row.get(f"call_{label}")]
            if not positives:
                continue
            result = self.explain(model, inputs[index : index + 1].float(), targets=[positives], method="gradcam")
            maps = result.normalized[0].detach().float().cpu().numpy()
            for position, heatmap in zip(positives, maps):
                self._save(row["sop_pseudonym"], card.labels[position], heatmap, card.crop)
                written += 1
        return written

    def _save(self, pseudonym: str, label: str, heatmap: np.ndarray, crop: str) -> None:
        target = heatmap_file(self.folder, pseudonym, label)
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.round(heatmap * 255.0), 0, 255).astype(np.uint8)
        text = PngInfo()
        text.add_text(CROP_TEXT_KEY, crop)
        write_with_atomically(target, lambda path: PILImage.fromarray(pixels).save(path, format="PNG", pnginfo=text))


def heatmap_writer(folder: Path) -> HeatmapWriter:
    """A writer into ``folder`` (created; ``OUT_DIR/heatmaps``) using :func:`medres.explain.explain`."""
    folder.mkdir(parents=True, exist_ok=True)
    return HeatmapWriter(folder, explain)
