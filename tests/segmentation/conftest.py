"""Shared phantoms and the one trained ``resunet3d_tiny`` (trained once per session, through the CLI)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from medres.cli.main import main
from medres.data.phantoms import make_ct_phantoms

TRAIN_CASES, HELD_OUT_CASES = 12, 4
SEG_TRAINING_ARGS = [
    "--model", "resunet3d_tiny", "--patch", "48", "48", "32", "--epochs", "32", "--patches-per-epoch", "60",
    "--lr", "2e-3", "--mirror-axes", "--patience", "100", "--no-progress",
]
"""A few CPU minutes: no mirroring (the phantoms' liver and spleen differ by side as well as by HU)."""


@pytest.fixture(scope="session")
def phantom_training_set(tmp_path_factory) -> Path:
    """12 CT phantoms (RAS, LPS, permuted, flipped, oblique NIfTIs and one DICOM series), MSD layout."""
    return make_ct_phantoms(tmp_path_factory.mktemp("phantoms_train"), TRAIN_CASES, seed=11)


@pytest.fixture(scope="session")
def phantom_held_out_set(tmp_path_factory) -> Path:
    """4 more phantoms from another seed (the last one a DICOM series), never seen in training."""
    return make_ct_phantoms(tmp_path_factory.mktemp("phantoms_held_out"), HELD_OUT_CASES, seed=23)


@pytest.fixture(scope="session")
def trained_seg_run(phantom_training_set: Path, tmp_path_factory) -> Path:
    """``medres train seg`` on the training phantoms; returns the run folder."""
    run_dir = tmp_path_factory.mktemp("seg_run")
    started = time.perf_counter()
    code = main(["train", "seg", "--data", str(phantom_training_set), "--out", str(run_dir), *SEG_TRAINING_ARGS])
    assert code == 0
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    best = max(float(row["score"]) for row in rows)
    print(f"\nresunet3d_tiny: {len(rows)} epochs in {time.perf_counter() - started:.0f} s, "
          f"best validation mean Dice {best:.3f}")
    return run_dir


@pytest.fixture(scope="session")
def trained_checkpoint(trained_seg_run: Path) -> Path:
    return trained_seg_run / "best.safetensors"
