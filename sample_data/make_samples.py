"""Regenerate the committed samples in this folder, byte for byte (fixed seed).

    python sample_data/make_samples.py [OUTPUT_DIR]

Writes:
- ``cr_chest_monochrome1.dcm``: a synthetic chest CR stored MONOCHROME1 (air is
  stored bright), with a window, view PA and planted synthetic identifiers;
- ``ct_series/``: six CT slices of an oblique stack (20 degrees about the
  patient's left-right axis, 2.5 mm apart), files numbered out of order;
- ``volume_oblique.nii.gz``: a phantom volume with a rotated, flipped affine;
- ``chest.png``: a 16-bit grayscale chest phantom;
- ``MANIFEST.json``: the geometry each sample was written with, for tests.

All data is synthetic; nothing here comes from a patient.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image as PILImage

from medres.synthetic.dicom import projection_dataset, write_ct_series, write_dicom

SEED = 20261128
OBLIQUE_DEGREES = 20.0


def chest_phantom(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness in [0, 1] of a frontal chest: dark lungs in a brighter body, bright spine."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    y, x = y / rows - 0.5, x / cols - 0.5
    body = ((x / 0.45) ** 2 + (y / 0.55) ** 2 < 1).astype(np.float32)
    lungs = (((np.abs(x) - 0.2) / 0.14) ** 2 + ((y + 0.05) / 0.32) ** 2 < 1).astype(np.float32)
    spine = (np.abs(x) < 0.04).astype(np.float32) * body
    heart = (((x + 0.05) / 0.15) ** 2 + ((y - 0.12) / 0.14) ** 2 < 1).astype(np.float32)
    image = 0.05 + 0.55 * body - 0.4 * lungs + 0.3 * spine + 0.25 * heart * lungs
    image += rng.normal(0, 0.01, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


def write_cr(folder: Path, rng: np.random.Generator) -> dict:
    brightness = chest_phantom(384, 320, rng)
    stored = np.round((1.0 - brightness) * 4000 + 50).astype(np.uint16)  # MONOCHROME1: bright = low
    dataset = projection_dataset(stored, uid_seed=f"{SEED}/cr", window=(2100, 4200))
    write_dicom(dataset, folder / "cr_chest_monochrome1.dcm")
    return {"rows": 384, "cols": 320, "photometric": "MONOCHROME1", "window": [2100, 4200]}


def oblique_orientation(degrees: float) -> list[float]:
    """Row cosine along patient left (+x); column cosine tilted from posterior towards feet."""
    angle = np.deg2rad(degrees)
    return [1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(-np.sin(angle))]


def write_series(folder: Path, rng: np.random.Generator) -> dict:
    n_slices, rows, cols = 6, 48, 40
    k, r, c = np.mgrid[0:n_slices, 0:rows, 0:cols]
    ball = ((r - 24) / 14.0) ** 2 + ((c - 18) / 12.0) ** 2 + ((k - 2.5) / 3.0) ** 2 < 1
    hounsfield = np.where(ball, 60.0, -1000.0) + rng.normal(0, 5, size=ball.shape)
    hounsfield[:, :, :3] = 700  # a bony strip on the first columns marks the in-plane direction
    orientation = oblique_orientation(OBLIQUE_DEGREES)
    origin, spacing, step = [-30.0, -40.0, 100.0], (0.8, 0.7), 2.5
    write_ct_series(folder / "ct_series", hounsfield, origin=origin, orientation=orientation,
                    pixel_spacing=spacing, slice_step=step, series_seed=f"{SEED}/ct",
                    instance_numbers=[5, 2, 6, 1, 4, 3])
    return {"n_slices": n_slices, "rows": rows, "cols": cols, "origin_lps": origin,
            "orientation": orientation, "pixel_spacing": list(spacing), "slice_step": step,
            "instance_numbers": [5, 2, 6, 1, 4, 3]}


def write_nifti(folder: Path, rng: np.random.Generator) -> dict:
    shape = (32, 40, 24)
    x, y, z = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    volume = (((x - 12) / 8.0) ** 2 + ((y - 20) / 12.0) ** 2 + ((z - 12) / 6.0) ** 2 < 1) * 100.0
    volume = (volume + rng.normal(0, 2, size=shape)).astype(np.int16)
    angle = np.deg2rad(15.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-1.2, 0.9, -3.0])  # flipped x and z, anisotropic
    affine[:3, 3] = [20.0, -15.0, 40.0]
    image = nib.Nifti1Image(volume, affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, folder / "volume_oblique.nii.gz")
    return {"shape": list(shape), "affine": affine.tolist()}


def write_png(folder: Path, rng: np.random.Generator) -> dict:
    brightness = chest_phantom(256, 256, rng)
    pixels = np.round(brightness * 65535).astype(np.uint16)
    PILImage.fromarray(pixels).save(folder / "chest.png", optimize=False)
    return {"rows": 256, "cols": 256, "bits": 16}


def main(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    manifest = {
        "cr_chest_monochrome1.dcm": write_cr(output, rng),
        "ct_series": write_series(output, rng),
        "volume_oblique.nii.gz": write_nifti(output, rng),
        "chest.png": write_png(output, rng),
        "note": "All samples are synthetic, written by make_samples.py with a fixed seed.",
    }
    (output / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
