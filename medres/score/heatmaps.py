"""``--heatmaps``: Grad-CAM PNGs for the classes each image is called positive for.

The maps come from :func:`medres.explain.explain` (Grad-CAM on the card's
``gradcam_layer``); this module only decides which classes to explain and
writes each as an 8-bit map on the model's input grid (0 = no evidence,
255 = the class probability's peak, as ``medres.explain`` scales it). Where
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
from torch import nn

from medres.atomic import write_with_atomically
from medres.explain import explain
from medres.models.card import ModelCard
from medres.score.folder import heatmap_file


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
                self._save(row["sop_pseudonym"], card.labels[position], heatmap)
                written += 1
        return written

    def _save(self, pseudonym: str, label: str, heatmap: np.ndarray) -> None:
        target = heatmap_file(self.folder, pseudonym, label)
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.round(heatmap * 255.0), 0, 255).astype(np.uint8)
        write_with_atomically(target, lambda path: PILImage.fromarray(pixels).save(path, format="PNG"))


def heatmap_writer(folder: Path) -> HeatmapWriter:
    """A writer into ``folder`` (created; ``OUT_DIR/heatmaps``) using :func:`medres.explain.explain`."""
    folder.mkdir(parents=True, exist_ok=True)
    return HeatmapWriter(folder, explain)
