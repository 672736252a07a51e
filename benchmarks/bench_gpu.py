"""GPU section: CheXNet training throughput, whether the loader keeps up, and whole-CT segmentation.

    python benchmarks/bench_gpu.py [--device auto|cuda|cpu] [--repeats 3] [--workers N] [--smoke]

Without a CUDA device (and the default ``--device auto``) it prints one line
saying the section was skipped. On CUDA:

1. Training ``chexnet_densenet121`` at 224x224, batch 64, bf16 autocast, channels-last, on images already in
   GPU memory: ``medres.train.loop.train_one_epoch`` versus a bare ``zero_grad / forward / backward / step``
   loop on the same model, optimizer and batches; images/s and their ratio.
2. The training loader (``CxrDataset`` over the ``medres prepare cxr`` cache, with training augmentation,
   ``--workers`` processes, already started) alone, in images/s, divided by the medres loop's images/s:
   >= 1 means the loader keeps up with the GPU (measured apart, so it is an upper bound).
3. Sliding-window segmentation of a 512x512x300 float volume already on the GPU by ``resunet3d``
   (untrained, 96^3 windows): ``medres.inference.sliding_window_logits`` (4 windows per batch,
   overlap 0.5, Gaussian blending, auto precision) versus ``monai.inferers.sliding_window_inference`` with its
   defaults (batch 1, overlap 0.25, constant blending, fp32) on the same model; seconds, speed-up,
   peak GPU memory (``torch.cuda.max_memory_allocated``).

Variants alternate after one warm-up each, figures are medians, and the device is synchronised before every
clock reading. ``--smoke`` shrinks every size so ``--device cpu --smoke`` runs the same code on a CPU in
seconds (for tests; its figures mean nothing). Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.inferers import sliding_window_inference
from timing import time_alternating
from torch import nn
from torch.utils.data import DataLoader

from medres.data.chestxray14 import load_chestxray14
from medres.data.cxr_dataset import CxrDataset, prepare_cxr_cache
from medres.inference import sliding_window_logits
from medres.models import create_model
from medres.runtime import DistributedContext, resolve_precision
from medres.synthetic.chestxray14 import make_chestxray14
from medres.train import loop
from medres.transforms.cxr import Augmentation, CxrInputTransform

CXR_MODEL = "chexnet_densenet121"
MONAI_DEFAULTS = "MONAI defaults (sw_batch_size 1, overlap 0.25, constant, fp32)"
MEDRES_DEFAULT = "medres default (4 per batch, overlap 0.5, gaussian, auto precision)"


@dataclass(frozen=True)
class Sizes:
    image: int
    batch: int
    steps: int
    loader_images: int
    seg_model: str
    volume: tuple[int, int, int]


FULL = Sizes(image=224, batch=64, steps=20, loader_images=1024, seg_model="resunet3d", volume=(512, 512, 300))
SMOKE = Sizes(image=64, batch=4, steps=2, loader_images=8, seg_model="resunet3d_tiny", volume=(64, 64, 48))


def training_rates(model: nn.Module, device: torch.device, precision: str, sizes: Sizes,
                   repeats: int) -> dict[str, float]:
    """Images/s of the bare loop and of ``train_one_epoch`` on the same channels-last model and GPU batches."""
    context = DistributedContext(0, 1, 0, device)
    model = context.prepare_model(model, channels_last=True)
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-4), nn.BCEWithLogitsLoss()
    n_images = sizes.batch * sizes.steps
    inputs = torch.randn(n_images, 1, sizes.image, sizes.image, device=device)
    targets = (torch.rand(n_images, len(model.card.labels), device=device) < 0.2).float()
    batches = list(zip(inputs.contiguous(memory_format=torch.channels_last).split(sizes.batch),
                       targets.split(sizes.batch)))
    config = loop.TrainConfig(epochs=1, batch_size=sizes.batch, precision=precision, channels_last=True, progress=False)
    dtype = resolve_precision(device, precision)

    def bare_loop() -> None:
        model.train()
        for batch_inputs, batch_targets in batches:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model(batch_inputs), batch_targets)
            loss.backward()
            optimizer.step()

    def medres_loop() -> None:
        loop.train_one_epoch(model, batches, loss_fn, optimizer, config, loop.Progress(), context)

    seconds, _ = time_alternating({"bare": bare_loop, "medres": medres_loop}, repeats, device)
    return {name: n_images / value for name, value in seconds.items()}


def epoch_images_per_second(dataset, batch: int, workers: int, device: torch.device, repeats: int) -> float:
    """Median images/s over ``repeats`` epochs of the loader, after one untimed epoch that starts its workers."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for _batch in loader:
            pass
        seconds.append(time.perf_counter() - start)
    return len(dataset) / statistics.median(seconds[1:])


def loader_rate(card, device: torch.device, sizes: Sizes, workers: int, repeats: int) -> float:
    """Images/s of the augmented training dataset over a cache of synthetic chest X-rays."""
    with tempfile.TemporaryDirectory(prefix="medres-bench-gpu-") as folder:
        index = load_chestxray14(make_chestxray14(Path(folder) / "data", sizes.loader_images, seed=0))
        cache = prepare_cxr_cache(index.table, Path(folder) / "cache", workers=max(1, workers), progress=False)
        dataset = CxrDataset(index.table, CxrInputTransform(card, Augmentation()), cache)
        return epoch_images_per_second(dataset, sizes.batch, workers, device, repeats)


@torch.no_grad()
def segmentation_times(device: torch.device, sizes: Sizes,
                       repeats: int) -> tuple[dict[str, float], dict[str, float | None]]:
    """Median seconds and peak memory of MONAI's defaults and medres on one random volume on ``device``."""
    torch.manual_seed(0)
    model = create_model(sizes.seg_model).to(device).eval()
    roi = tuple(model.card.input_size)
    volume = torch.randn(1, *sizes.volume, device=device)
    variants = {
        MONAI_DEFAULTS: lambda: sliding_window_inference(volume[None], roi, 1, model),
        MEDRES_DEFAULT: lambda: sliding_window_logits(model, volume, roi, device, 4, 0.5, "auto"),
    }
    return time_alternating(variants, repeats, device)


def print_training(rates: dict[str, float], loader: float, sizes: Sizes, precision: str, workers: int) -> None:
    print(f"Training `{CXR_MODEL}`, {sizes.image}x{sizes.image}, batch {sizes.batch}, {precision} autocast, "
          f"channels-last, {sizes.batch * sizes.steps} images in device memory:\n")
    print("| loop | img/s | vs bare PyTorch |")
    print("|---|---|---|")
    print(f"| bare PyTorch | {rates['bare']:.1f} | 1.00x |")
    print(f"| medres `train_one_epoch` | {rates['medres']:.1f} | **{rates['medres'] / rates['bare']:.2f}x** |")
    print("\n(aim: medres loop >= 0.9x the bare loop)\n")
    ratio = loader / rates["medres"]
    print(f"Loader: `CxrDataset` over the `medres prepare cxr` cache, training augmentation, batch {sizes.batch}, "
          f"{workers} worker processes: {loader:.0f} img/s; **loader/GPU = {ratio:.2f}x** "
          f"({'keeps up' if ratio >= 1 else 'does not keep up'}; >= 1 keeps up)\n")


def print_segmentation(seconds: dict[str, float], peaks: dict[str, float | None], sizes: Sizes,
                       precision: str) -> None:
    volume = "x".join(str(side) for side in sizes.volume)
    print(f"Segmentation: `{sizes.seg_model}` (untrained), a {volume} float volume in device memory; "
          f"auto precision here = {precision}:\n")
    print("| variant | median s | peak GPU memory GiB | speed-up vs MONAI defaults |")
    print("|---|---|---|---|")
    for name, median in seconds.items():
        peak = "n/a" if peaks[name] is None else f"{peaks[name]:.2f}"
        print(f"| {name} | {median:.2f} | {peak} | {seconds[MONAI_DEFAULTS] / median:.2f}x |")
    print(f"\n**medres default vs MONAI defaults: {seconds[MONAI_DEFAULTS] / seconds[MEDRES_DEFAULT]:.2f}x "
          "faster**\n")


def precision_name(device: torch.device, precision: str) -> str:
    dtype = resolve_precision(device, precision)
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def resolve_device(choice: str) -> torch.device | None:
    """The device to measure on; None when ``auto`` finds no CUDA GPU."""
    if choice == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available")
    return torch.device(choice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader worker processes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one repeat, to test the code path")
    args = parser.parse_args()
    print("## GPU (bench_gpu.py)\n")
    device = resolve_device(args.device)
    if device is None:
        print("No CUDA GPU was found, so this section was skipped.\n")
        return
    sizes, repeats = (SMOKE, 1) if args.smoke else (FULL, args.repeats)
    training_precision = "bf16" if device.type == "cuda" else "auto"
    described = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    smoke_note = " (smoke sizes: checks the code path, figures mean nothing)" if args.smoke else ""
    print(f"Device: {described}{smoke_note}; {repeats} timed run(s) of each variant, alternating, after one "
          "warm-up; medians.\n")
    torch.manual_seed(0)
    model = create_model(CXR_MODEL, input_size=(sizes.image, sizes.image))
    loader = loader_rate(model.card, device, sizes, args.workers, repeats)
    rates = training_rates(model, device, training_precision, sizes, repeats)
    del model  # frees its device memory before the segmentation's peak is measured
    print_training(rates, loader, sizes, precision_name(device, training_precision), args.workers)
    print_segmentation(*segmentation_times(device, sizes, repeats), sizes, precision_name(device, "auto"))


if __name__ == "__main__":
    main()
