"""Which overlap ``medres segment`` defaults to: 0.5 (nnU-Net's) or 0.25 (MONAI's), measured on a wide field of view.

    python benchmarks/segment_overlap.py [--checkpoint CKPT] [--epochs 80]

The agreement section of ``bench_segment.py`` cannot tell the two apart: its
held-out phantoms are about one window wide at the model's spacing, so both
overlaps place the same windows. Here four random phantoms (seeds 100-103,
two with splenomegaly) are sampled on a wide grid at the model's spacing
(150 x 130 x 110 voxels at 2.5 mm, most of it outside the body), so the
windows differ: 64 at overlap 0.5, 27 at 0.25. The model is the one
``bench_segment.py`` trains (``resunet3d_tiny`` through ``medres train seg``,
80 epochs; or ``--checkpoint``). Printed: Dice per organ against the truth and
between the variants (mean and minimum over the four), and seconds per
variant.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_segment import train_phantom_model  # the agreement model of bench_segment.py, beside this script
from monai.inferers import sliding_window_inference

from medres.inference.sliding_window import count_windows, sliding_window_logits
from medres.metrics import dice
from medres.models import load_checkpoint
from medres.synthetic.phantoms import PHANTOM_LABELS, centred_affine, random_anatomy, voxel_centres_ras
from medres.transforms.volume import normalize_intensities

SIZE, SPACING_MM, SEEDS = (150, 130, 110), 2.5, (100, 101, 102, 103)
CPU = torch.device("cpu")
VARIANTS = ("medres, overlap 0.5 (default)", "medres, overlap 0.25", "MONAI defaults (overlap 0.25, constant)")
PAIRS = ((VARIANTS[0], "truth"), (VARIANTS[1], "truth"), (VARIANTS[2], "truth"), (VARIANTS[0], VARIANTS[2]),
         (VARIANTS[1], VARIANTS[2]), (VARIANTS[1], VARIANTS[0]))


def wide_phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hounsfield units and labels of a random phantom on the wide grid."""
    affine = centred_affine(SIZE, SPACING_MM)
    anatomy = random_anatomy(np.random.default_rng(seed), splenomegaly=seed % 2 == 1)
    hounsfield, labels = anatomy.sample(voxel_centres_ras(affine, SIZE), np.random.default_rng(seed + 100))
    return hounsfield, np.asarray(labels)


@torch.no_grad()
def label_maps(model: torch.nn.Module, volume: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    roi = model.card.input_size
    runs = {
        VARIANTS[0]: lambda: sliding_window_logits(model, volume, roi, CPU, 4, 0.5, "auto"),
        VARIANTS[1]: lambda: sliding_window_logits(model, volume, roi, CPU, 4, 0.25, "auto"),
        VARIANTS[2]: lambda: sliding_window_inference(volume[None], roi, 1, model)[0],
    }
    maps, seconds = {}, {}
    for name, run in runs.items():
        started = time.perf_counter()
        maps[name] = run().argmax(0).numpy()
        seconds[name] = time.perf_counter() - started
    return maps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", help="a trained phantom seg checkpoint (skips training)")
    parser.add_argument("--epochs", type=int, default=80)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = args.checkpoint or train_phantom_model(Path(work), args.epochs)
        model = load_checkpoint(checkpoint).eval()
        dices: dict[tuple[str, str], list[list[float]]] = {pair: [] for pair in PAIRS}
        seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for seed in SEEDS:
            hounsfield, truth = wide_phantom(seed)
            volume = torch.from_numpy(normalize_intensities(hounsfield[None].astype(np.float32),
                                                            model.card.normalization))
            maps, timings = label_maps(model, volume)
            maps["truth"] = truth
            for name in VARIANTS:
                seconds[name].append(timings[name])
            for first, second in PAIRS:
                dices[(first, second)].append([dice(maps[first] == label, maps[second] == label)
                                               for label in range(1, len(PHANTOM_LABELS))])
    roi = model.card.input_size
    print(f"Wide field of view: {SIZE[0]}x{SIZE[1]}x{SIZE[2]} voxels at {SPACING_MM} mm, {len(SEEDS)} phantoms, "
          f"windows {'x'.join(map(str, roi))}: {count_windows(SIZE, roi, 0.5)} at overlap 0.5, "
          f"{count_windows(SIZE, roi, 0.25)} at 0.25. Dice per organ, mean (minimum) over the phantoms:\n")
    print("| comparison | " + " | ".join(PHANTOM_LABELS[1:]) + " |")
    print("|---|" + "---|" * (len(PHANTOM_LABELS) - 1))
    for (first, second), values in dices.items():
        cells = [f"{mean:.4f} ({low:.4f})" for mean, low in zip(np.mean(values, 0), np.min(values, 0))]
        print(f"| {first} vs {second} | " + " | ".join(cells) + " |")
    print("\nSeconds per phantom, median: " + "; ".join(f"{name} {np.median(values):.2f}"
                                                       for name, values in seconds.items()))


if __name__ == "__main__":
    main()
