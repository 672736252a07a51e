"""Training throughput: the medres loop vs a bare PyTorch loop; cached vs PNG loader.

    python benchmarks/bench_train.py [--steps 12] [--repeats 3] [--images 96]

1. The same model, batch, precision and in-memory data, trained by
   ``medres.train.loop.train_one_epoch`` and by a bare ``for x, y in loader:
   zero_grad / forward / backward / step`` loop, alternating; images/s ratio.
2. Images/s of ``CxrDataset`` reading the ``medres prepare cxr`` cache vs decoding
   the 1024x1024 PNGs (the size NIH distributes), single process.
Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medres.data.chestxray14 import load_chestxray14
from medres.data.cxr_dataset import CxrDataset, prepare_cxr_cache
from medres.models import create_model
from medres.runtime import DistributedContext
from medres.synthetic.chestxray14 import make_chestxray14
from medres.train.loop import Progress, TrainConfig, train_one_epoch


def bare_loop(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, loss_fn: nn.Module) -> None:
    model.train()
    for inputs, targets in loader:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        optimizer.step()


def medres_loop(model, loader, optimizer, loss_fn) -> None:
    config = TrainConfig(epochs=1, batch_size=loader.batch_size, progress=False)
    context = DistributedContext(0, 1, 0, torch.device("cpu"))
    train_one_epoch(model, loader, loss_fn, optimizer, config, Progress(), context)


def loop_ratio(model_name: str, input_size: int, batch: int, steps: int, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    inputs = torch.randn(batch * steps, 1, input_size, input_size)
    targets = (torch.rand(batch * steps, 14) < 0.2).float()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=batch)
    model = create_model(model_name, input_size=(input_size, input_size))
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-4), nn.BCEWithLogitsLoss()
    bare_loop(model, loader, optimizer, loss_fn)  # warm-up
    times = {"bare": [], "medres": []}
    for _ in range(repeats):
        for name, loop in (("bare", bare_loop), ("medres", medres_loop)):
            start = time.perf_counter()
            loop(model, loader, optimizer, loss_fn)
            times[name].append(time.perf_counter() - start)
    n_images = batch * steps
    return n_images / statistics.median(times["bare"]), n_images / statistics.median(times["medres"])


def loader_rates(n_images: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        root = make_chestxray14(Path(folder) / "data", n_images, seed=0, image_size=1024)
        index = load_chestxray14(root)
        cache = prepare_cxr_cache(index.table, Path(folder) / "cache", size=256, workers=2, progress=False)
        card = create_model("chexnet_densenet121").card
        from medres.transforms.cxr import CxrInputTransform

        rates = []
        for source in (cache, None):
            dataset = CxrDataset(index.table, CxrInputTransform(card), source, stored_size=256)
            start = time.perf_counter()
            for _ in DataLoader(dataset, batch_size=16):
                pass
            rates.append(len(dataset) / (time.perf_counter() - start))
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=96)
    args = parser.parse_args()
    print("## Training loop and data loading (bench_train.py)\n")
    print("| model, input, batch (fp32, data in memory) | bare PyTorch img/s | medres loop img/s | ratio |")
    print("|---|---|---|---|")
    for name, size, batch in (("chexnet_tiny", 128, 32), ("chexnet_resnet50", 128, 16)):
        bare, medres = loop_ratio(name, size, batch, args.steps, args.repeats)
        print(f"| {name}, {size}x{size}, {batch} | {bare:.1f} | {medres:.1f} | **{medres / bare:.2f}x** |")
    print("\n(aim: medres loop >= 0.9x the bare loop)\n")
    cached, png = loader_rates(args.images)
    print(f"Loader, {args.images} synthetic 1024x1024 PNGs -> 224x224 inputs, one process: cache "
          f"{cached:.0f} img/s, PNG decode {png:.1f} img/s, **cache/PNG = {cached / png:.1f}x**\n")


if __name__ == "__main__":
    main()
