"""benchmarks/bench_gpu.py: its CUDA code path runs end to end on a CPU (smoke sizes), and it skips without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_gpu.py"


def run_bench(*arguments: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), *arguments]
    return subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_smoke_run_on_cpu_prints_the_whole_section():
    result = run_bench("--device", "cpu", "--smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout
    assert output.startswith("## GPU (bench_gpu.py)")
    assert "| bare PyTorch |" in output
    assert "| medres `train_one_epoch` |" in output and "x** |" in output
    assert "**loader/GPU = " in output
    assert "| MONAI defaults (sw_batch_size 1, overlap 0.25, constant, fp32) |" in output
    assert "| medres default (4 per batch, overlap 0.5, gaussian, auto precision) |" in output
    assert "**medres default vs MONAI defaults: " in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the section would run")
def test_without_cuda_the_default_run_skips_the_section():
    result = run_bench()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("## GPU (bench_gpu.py)")
    assert "No CUDA GPU was found, so this section was skipped." in result.stdout
    assert "| bare PyTorch |" not in result.stdout
