"""The plain way to score a folder of chest X-ray DICOMs: the reference ``bench_score.py`` times as a process.

    python benchmarks/plain_score.py FOLDER CHECKPOINT OUT_CSV

What a user writes without medres's scorer: one file at a time, ``dcmread`` ->
``pixel_array`` -> min-max -> antialiased resize to 224 x 224 -> the model at
batch 1 in fp32 -> sigmoid, one CSV row per file. The model comes from the same
checkpoint: MONAI's ``DenseNet121``, as a user builds it without medres, with
the checkpoint's tensors (safetensors; the keys are MONAI's); channels and
labels come from the checkpoint's card. Run as its own process, it
pays the interpreter's start-up and its imports, as the user does.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121
from safetensors.torch import load_file

from medres.models import read_card


def score_file(path: Path, model: torch.nn.Module) -> list[float]:
    """One file's probabilities: the per-file loop of ``bench_score.naive_rate``."""
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1.0)
    image = F.interpolate(torch.from_numpy(pixels)[None, None], size=(224, 224), mode="bilinear", antialias=True)
    return torch.sigmoid(model((image - 0.449) / 0.226))[0].tolist()


def load_densenet121(checkpoint: Path) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """MONAI's DenseNet-121 with the checkpoint's weights, in evaluation mode; and its labels (from the card)."""
    card = read_card(checkpoint)
    model = DenseNet121(spatial_dims=2, in_channels=card.in_channels, out_channels=len(card.labels))
    model.load_state_dict(load_file(checkpoint))
    return model.eval(), tuple(card.labels)


def main(folder: Path, checkpoint: Path, out_csv: Path) -> None:
    model, labels = load_densenet121(checkpoint)
    with torch.inference_mode(), open(out_csv, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", *labels])
        for path in sorted(folder.rglob("*.dcm")):
            writer.writerow([path.relative_to(folder).as_posix(), *score_file(path, model)])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
