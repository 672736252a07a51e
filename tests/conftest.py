"""Shared fixtures: real DICOM test files from pydicom and pydicom-data, samples."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"


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
