"""Fixtures for batch scoring: a tiny checkpoint and folders of synthetic chest X-ray DICOMs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from medres.models import create_model, save_checkpoint
from medres.score.outputs import read_table
from medres.synthetic.chestxray14 import make_chestxray14
from medres.synthetic.dicom import projection_dataset, write_dicom

IDENTIFIERS = {
    "PatientName": "Zyxwvut^Quentinius",
    "PatientID": "PID-938172",
    "AccessionNumber": "ACC-551234",
    "InstitutionName": "Saint Elsewhere Clinic",
    "PatientBirthDate": "19450317",
}
KEY = "test-pseudonym-key"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained ``chexnet_tiny`` at 64x64, saved as safetensors."""
    torch.manual_seed(0)
    model = create_model("chexnet_tiny", input_size=(64, 64))
    return save_checkpoint(model, tmp_path_factory.mktemp("checkpoint") / "tiny.safetensors")


@pytest.fixture(scope="session")
def synthetic_pngs(tmp_path_factory) -> list[Path]:
    """A few synthetic ChestX-ray14 PNGs (8-bit, 96 px) to wrap as DICOM or copy as they are."""
    root = make_chestxray14(tmp_path_factory.mktemp("cxr14"), 24, seed=0, image_size=96)
    return sorted((root / "images").glob("*.png"))


def write_synthetic_dicoms(folder: Path, pngs: list[Path], count: int, identifiers: dict[str, str] | None = None,
                           special: bool = True) -> list[Path]:
    """``count`` chest X-ray DICOMs: CR/DX alternating, MONOCHROME1/2 alternating.

    With ``special``, file 0 is a lateral (``LL``) and file 1 a hand film, so
    the applicability rules have something to refuse.
    """
    paths = []
    for index in range(count):
        gray = np.asarray(PILImage.open(pngs[index % len(pngs)]).convert("L"), dtype=np.uint16) * 16
        photometric = "MONOCHROME1" if index % 2 else "MONOCHROME2"
        stored = (4095 - gray) if photometric == "MONOCHROME1" else gray
        view = "LL" if special and index == 0 else ("AP" if index % 3 == 0 else "PA")
        body_part = "HAND" if special and index == 1 else "CHEST"
        dataset = projection_dataset(stored, uid_seed=f"{folder.name}-{index}", modality="DX" if index % 2 else "CR",
                                     photometric=photometric, view_position=view, body_part=body_part,
                                     identifiers=identifiers)
        paths.append(write_dicom(dataset, folder / f"series{index % 3}" / f"image{index:03d}.dcm"))
    return paths


def write_junk(folder: Path, dicom_example: Path) -> None:
    """An empty file, a text file, a truncated DICOM and a zip archive."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    data = dicom_example.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) * 2 // 3])
    shutil.make_archive(str(folder / "archive"), "zip", root_dir=dicom_example.parent, base_dir=dicom_example.name)


def table_rows(out_dir: Path, name: str) -> list[dict[str, str]]:
    path = out_dir / f"{name}.csv"
    return list(read_table(path)) if path.exists() else []


def all_output_bytes(out_dir: Path) -> bytes:
    """Every byte of every file in the output folder (journal, tables, run.json, key, heatmaps)."""
    return b"".join(path.read_bytes() for path in sorted(out_dir.rglob("*")) if path.is_file())
