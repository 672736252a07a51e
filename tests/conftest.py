"""Shared fixtures: real DICOM test files from pydicom and pydicom-data, samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread for the whole suite.

    Tiny models gain nothing from a second thread, and on a loaded 2-core
    machine OpenMP threads waiting for each other made a 78k-parameter forward
    pass take 440 ms instead of 2.5 ms. Set once here, trained fixtures no
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
    from medres.data.synthetic import make_chestxray14

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
