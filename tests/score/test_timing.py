"""The timing breakdown: the process's start, the moments of a run, and what score and segment record of it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from medres.cli.main import main
from medres.timing import StageClock, describe, process_start_time
from tests.conftest import subprocess_environment
from tests.score.conftest import write_synthetic_dicoms

SLEEP_SECONDS = 0.6
PROCESS_AGE = f"""
import time
time.sleep({SLEEP_SECONDS})
from medres.timing import process_start_time
started, source = process_start_time()
print(time.time() - started, source)
"""


def test_the_process_start_is_the_interpreters_own():
    """A process that sleeps before asking is at least that old: the start is not when the module was imported."""
    result = subprocess.run([sys.executable, "-c", PROCESS_AGE], capture_output=True, text=True,
                            env=subprocess_environment(), timeout=120)
    age, source = result.stdout.split()
    assert source == "/proc/self/stat"
    assert SLEEP_SECONDS <= float(age) < SLEEP_SECONDS + 60


def test_this_process_started_before_now_and_after_boot():
    started, _ = process_start_time()
    assert started <= time.time()
    boot = time.time() - float(open("/proc/uptime").read().split()[0])
    assert started >= boot - 1


def test_clock_keeps_the_earliest_moment_and_sums_stages():
    clock = StageClock(process_started=100.0, process_start="test")
    clock.mark("first_image_decoded", 103.0)
    clock.mark("first_image_decoded", 102.5)
    clock.mark("first_image_decoded", 104.0)
    clock.add("inference", 1.25)
    clock.add("inference", 0.5)
    other = StageClock(process_started=100.0, process_start="test", moments={"first_image_decoded": 101.0},
                       seconds={"inference": 2.0, "writing": 0.1})
    clock.merge(other)
    record = clock.record()
    assert record["since_process_start"] == {"first_image_decoded": 1.0}
    assert record["seconds"] == {"inference": 3.75, "writing": 0.1}
    assert describe(record).splitlines() == ["timings, s since the process started: first image decoded 1.00",
                                             "timings, s per stage: inference 3.75, writing 0.10"]


def test_score_records_and_prints_the_breakdown(tmp_path, tiny_checkpoint, synthetic_pngs, capsys):
    write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 7, special=True)
    code = main(["score", str(tmp_path / "in"), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "out"),
                 "--batch-size", "2", "--workers", "1", "--no-progress", "--verbose"])
    assert code == 0
    timings = json.loads((tmp_path / "out" / "run.json").read_text())["timings"]
    moments = timings["since_process_start"]
    assert {"run_called", "decoders_started", "first_image_decoded", "model_ready", "first_batch_scored",
            "finished"} <= set(moments)
    assert 0 <= moments["run_called"] <= moments["decoders_started"] <= moments["first_image_decoded"]
    assert moments["model_ready"] <= moments["first_batch_scored"] <= moments["finished"]
    assert {"model_load", "decode_in_workers", "inference", "writing"} <= set(timings["seconds"])
    assert all(value >= 0 for value in timings["seconds"].values())
    assert timings["seconds"]["inference"] == pytest.approx(timings["model_seconds"], abs=0.002)
    printed = capsys.readouterr().out
    assert "timings, s since the process started: run called" in printed and "timings, s per stage:" in printed


def test_segment_records_and_prints_the_breakdown(tmp_path, capsys):
    import nibabel as nib
    import torch

    from medres.models import create_model, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(create_model("resunet3d_tiny"), tmp_path / "seg.safetensors")
    volume = np.random.default_rng(0).normal(0, 100, (40, 36, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 1.5, 1.0])), tmp_path / "ct.nii.gz")
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--checkpoint", str(checkpoint), "--out",
                 str(tmp_path / "out"), "--no-progress", "--verbose"]) == 0
    timings = json.loads((tmp_path / "out" / "volumes.json").read_text())["timings"]
    moments = timings["since_process_start"]
    assert {"run_called", "first_image_decoded", "model_ready", "finished"} <= set(moments)
    assert moments["run_called"] <= min(moments["first_image_decoded"], moments["model_ready"])
    assert max(moments["first_image_decoded"], moments["model_ready"]) <= moments["finished"]
    assert {"read", "model_load", "inference", "writing"} <= set(timings["seconds"])
    assert "timings, s per stage: " in capsys.readouterr().out
