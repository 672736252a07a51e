"""Side-by-side timing shared by the benchmark scripts (imported from their own folder)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(variants: dict[str, Callable[[], object]], repeats: int,
                     device: torch.device) -> tuple[dict[str, float], dict[str, float | None]]:
    """Median seconds and peak CUDA memory (GiB; None on the CPU) of each variant, one warm-up each first."""
    for run in variants.values():
        run()
    times = {name: [] for name in variants}
    peaks = dict.fromkeys(variants, 0.0 if device.type == "cuda" else None)
    for _ in range(repeats):
        for name, run in variants.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) / 2**30)
    return {name: statistics.median(values) for name, values in times.items()}, peaks
