"""medres sliding-window inference versus MONAI's defaults, same model and volume, side by side.

    python benchmarks/bench_segment.py [--size 192 192 96] [--repeats 3]

Model: ``resunet3d`` (untrained, seed 0), 96^3 windows. Volume: a synthetic
abdominal CT phantom sampled at 1.5 mm on the given grid, normalised as
training would. Reference: ``monai.inferers.sliding_window_inference`` with
its defaults (``sw_batch_size=1``, ``overlap=0.25``, constant blending, fp32).
medres: ``medres.segment.inference.sliding_window_logits`` as ``medres
segment`` runs it (4 windows per batch, ``overlap=0.5``, Gaussian blending,
bf16 autocast where the CPU supports it), plus the same in fp32 to separate
the precision effect. Runs alternate so machine noise hits all alike; the
figures are ratios of medians. Agreement: Dice of each label between the
argmax outputs, split into the blending and the precision effects; an
untrained network's near-tied logits exaggerate both (``--checkpoint`` runs
trained weights). Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medres.data.phantoms import random_anatomy, voxel_centres_ras
from medres.metrics import dice
from medres.models import create_model, load_checkpoint
from medres.segment.inference import sliding_window_logits
from medres.transforms.volume import normalize_intensities
from medres.train.loop import resolve_precision

LABELS = ("background", "liver", "spleen", "kidneys")
SPACING_MM = 1.5
UNTRAINED_CT = {"kind": "per_channel", "channels": [{"kind": "ct_clip_zscore", "clip_low": -100.0,
                                                     "clip_high": 800.0, "mean": 80.0, "std": 150.0}]}


def phantom_hounsfield(size: tuple[int, int, int], spacing: tuple[float, ...]) -> np.ndarray:
    """A ``(1, X, Y, Z)`` synthetic abdominal CT (HU) on a grid of ``spacing`` mm centred on the phantom."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(size) - 1) * np.asarray(spacing) / 2
    hounsfield, _ = random_anatomy(np.random.default_rng(0), splenomegaly=False).sample(
        voxel_centres_ras(affine, size), np.random.default_rng(1))
    return hounsfield[None].astype(np.float32)


def network_input(model, size: tuple[int, int, int], trained: bool) -> torch.Tensor:
    """The phantom as the model sees it: its card's spacing and normalisation when trained."""
    spacing = model.card.spacing if trained else (SPACING_MM,) * 3
    normalization = model.card.normalization if trained else UNTRAINED_CT
    return torch.from_numpy(normalize_intensities(phantom_hounsfield(size, spacing), normalization))


def timed(function) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, nargs=3, default=(192, 192, 96))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", help="a trained seg checkpoint instead of the untrained resunet3d")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint) if args.checkpoint else create_model("resunet3d", labels=LABELS)
    model.eval()
    volume = network_input(model, tuple(args.size), trained=bool(args.checkpoint))
    roi, cpu = model.card.input_size, torch.device("cpu")
    variants = {
        "MONAI defaults (sw_batch_size 1, overlap 0.25, constant, fp32)": lambda: sliding_window_inference(
            volume[None], roi, 1, model)[0],
        "medres, fp32 (4 per batch, overlap 0.5, gaussian)": lambda: sliding_window_logits(
            model, volume, roi, cpu, 4, 0.5, "fp32"),
        "medres default (4 per batch, overlap 0.5, gaussian, auto precision)": lambda: sliding_window_logits(
            model, volume, roi, cpu, 4, 0.5, "auto"),
    }
    times = {name: [] for name in variants}
    outputs = {}
    with torch.no_grad():
        for name, run in variants.items():  # warm-up: oneDNN kernels, allocator
            run()
        for _ in range(args.repeats):
            for name, run in variants.items():
                seconds, outputs[name] = timed(run)
                times[name].append(seconds)
    args.model_name, args.roi = model.card.name, roi
    print_report(args, times, outputs)


def agreement(first: torch.Tensor, second: torch.Tensor, n_labels: int) -> str:
    """Dice per label between two argmax label maps, as text."""
    first_labels, second_labels = first.argmax(0).numpy(), second.argmax(0).numpy()
    return ", ".join(f"{value}: {dice(first_labels == value, second_labels == value):.4f}"
                     for value in range(n_labels))


def top_two_margin(logits: torch.Tensor) -> float:
    """Median gap between the two largest logits: how close to a tie the argmax is."""
    top = torch.topk(logits, 2, dim=0).values
    return float((top[0] - top[1]).median())


def print_report(args: argparse.Namespace, times: dict[str, list[float]], outputs: dict[str, torch.Tensor]) -> None:
    reference, medres_fp32, default = list(times)
    medians = {name: statistics.median(values) for name, values in times.items()}
    precision = resolve_precision(torch.device("cpu"), "auto")
    size = "x".join(str(v) for v in args.size)
    weights = f"weights from `{args.checkpoint}`" if args.checkpoint else "untrained, seed 0"
    n_labels = outputs[reference].shape[0]
    print("## Sliding-window segmentation (bench_segment.py)\n")
    roi = "x".join(str(v) for v in args.roi)
    print(f"Model `{args.model_name}` ({weights}), {roi} windows, volume {size} (synthetic CT phantom); "
          f"{args.repeats} alternating runs each after one warm-up, medians; auto precision here = "
          f"{precision or 'fp32'}.\n")
    print("| variant | median s | speed-up vs MONAI defaults |")
    print("|---|---|---|")
    for name in times:
        print(f"| {name} | {medians[name]:.2f} | {medians[reference] / medians[name]:.2f}x |")
    print(f"\n**Ratio medres default / MONAI defaults (time): {medians[default] / medians[reference]:.2f}x**\n")
    print("Agreement of the argmax labels (Dice per label value):\n")
    print(f"- medres default vs MONAI defaults: {agreement(outputs[default], outputs[reference], n_labels)}")
    print(f"- blending and overlap only (medres fp32 vs MONAI): "
          f"{agreement(outputs[medres_fp32], outputs[reference], n_labels)}")
    print(f"- precision only (medres auto vs medres fp32): "
          f"{agreement(outputs[default], outputs[medres_fp32], n_labels)}")
    note = "" if args.checkpoint else (" (an untrained network's classes are nearly tied, so small numeric "
                                       "differences flip its argmax; pass --checkpoint for trained weights)")
    print(f"\nMedian gap between the two largest logits: {top_two_margin(outputs[reference]):.4f}{note}\n")


if __name__ == "__main__":
    main()
