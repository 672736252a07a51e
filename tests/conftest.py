"""Shared fixtures: real DICOM test files from pydicom and pydicom-data, samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread for the whole suite.

    Tiny models gain nothing from a second thread, and on a loaded 2-core
    machine OpenMP threads waiting for each other slow a tiny forward pass by
    two orders of magnitude. Set once here, trained fixtures no
    longer depend on which test modules happened to be collected.
    """
    torch.set_num_threads(1)


def pydicom_test_files_dir() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files"


def pydicom_data_dir() -> Path:
    """Files of the ``pydicom-data`` package (installed as ``data_store``), no download."""
    import data_store

    return Path(data_store.__file__).parent / "data"


def dicom_test_file(name: str) -> Path:
    """A file from pydicom's own test files or pydicom-data, found on disk (never downloaded)."""
    for folder in (pydicom_test_files_dir(), pydicom_data_dir()):
        matches = sorted(folder.rglob(name))
        if matches:
            return matches[0]
    raise FileNotFoundError(name)


@pytest.fixture(scope="session")
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def synthetic_cxr_2k(tmp_path_factory) -> Path:
    """2,000 synthetic NIH-layout chest X-rays at 128 px (generated once per test run)."""
    from medres.synthetic.chestxray14 import make_chestxray14

    root = tmp_path_factory.mktemp("synthetic_cxr_2k")
    make_chestxray14(root, 2000, seed=0, image_size=128)
    return root


@pytest.fixture(scope="session")
def trained_cxr_run(synthetic_cxr_2k, tmp_path_factory) -> Path:
    """``chexnet_tiny`` trained once per test run through the CLI (cache, then train); the run folder.

    12 epochs, batches of 16, learning rate 2e-3: long enough to learn the small
    lesions (Nodule, Atelectasis) that Grad-CAM must find in
    tests/explain/test_localisation.py, which shorter runs (8 epochs of 32)
    often miss.
    """
    from medres.cli.main import main

    cache = tmp_path_factory.mktemp("cxr_cache") / "cache_128"
    run = tmp_path_factory.mktemp("trained_cxr") / "run"
    assert main(["prepare", "cxr", "--data", str(synthetic_cxr_2k), "--size", "128", "--out", str(cache)]) == 0
    assert main(["train", "cxr", "--data", str(synthetic_cxr_2k), "--cache", str(cache), "--out", str(run),
                 "--model", "chexnet_tiny", "--epochs", "12", "--batch-size", "16", "--lr", "2e-3",
                 "--patience", "3"]) == 0
    return run


# ---------------------------------------------------------------- CT phantoms and the one trained resunet3d_tiny
# Shared by tests/segmentation and tests/evaluate (the `eval seg` tests against MedPy and MONAI): session fixtures
# defined once here, so the model is trained once per run whichever of those folders are collected.

SEG_TRAIN_CASES, SEG_HELD_OUT_CASES = 12, 4
SEG_TRAINING_ARGS = [
    "--model", "resunet3d_tiny", "--patch", "48", "48", "32", "--epochs", "32", "--patches-per-epoch", "60",
    "--lr", "2e-3", "--mirror-axes", "--patience", "100", "--no-progress",
]
"""A few CPU minutes: no mirroring (the phantoms' liver and spleen differ by side as well as by HU)."""


@pytest.fixture(scope="session")
def phantom_training_set(tmp_path_factory) -> Path:
    """12 CT phantoms (RAS, LPS, permuted, flipped, oblique NIfTIs and one DICOM series), MSD layout."""
    from medres.synthetic.phantoms import make_ct_phantoms

    return make_ct_phantoms(tmp_path_factory.mktemp("phantoms_train"), SEG_TRAIN_CASES, seed=11)


@pytest.fixture(scope="session")
def phantom_held_out_set(tmp_path_factory) -> Path:
    """4 more phantoms from another seed (the last one a DICOM series), never seen in training."""
    from medres.synthetic.phantoms import make_ct_phantoms

    return make_ct_phantoms(tmp_path_factory.mktemp("phantoms_held_out"), SEG_HELD_OUT_CASES, seed=23)


@pytest.fixture(scope="session")
def trained_seg_run(phantom_training_set: Path, tmp_path_factory) -> Path:
    """``medres train seg`` on the training phantoms; returns the run folder."""
    import csv
    import time

    from medres.cli.main import main

    run_dir = tmp_path_factory.mktemp("seg_run")
    started = time.perf_counter()
    code = main(["train", "seg", "--data", str(phantom_training_set), "--out", str(run_dir), *SEG_TRAINING_ARGS])
    assert code == 0
    with open(run_dir / "metrics.csv") as stream:
        rows = list(csv.DictReader(stream))
    best = max(float(row["score"]) for row in rows)
    print(f"\nresunet3d_tiny: {len(rows)} epochs in {time.perf_counter() - started:.0f} s, "
          f"best validation mean Dice {best:.3f}")
    return run_dir


@pytest.fixture(scope="session")
def trained_checkpoint(trained_seg_run: Path) -> Path:
    return trained_seg_run / "best.safetensors"


def subprocess_environment() -> dict[str, str]:
    """The test's environment plus one thread per process and the repository on the path."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
