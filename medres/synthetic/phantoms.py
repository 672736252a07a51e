"""Synthetic abdominal CT phantoms with exact ground truth in patient millimetres.

The anatomy is defined once, in RAS+ millimetres (ellipsoids for the body,
liver, spleen, kidneys and an unlabelled spine), and each case samples it on
its own voxel grid: anisotropic spacing, RAS, LPS, permuted and flipped axes,
an oblique grid, and DICOM series written with
:func:`medres.synthetic.dicom.write_ct_series`. Because the truth lives in
millimetres, not voxels, a segmentation that is right in patient space is
right for every storage order, which is what the orientation tests check.

Layout written (Medical Segmentation Decathlon): ``dataset.json``,
``imagesTr/<case>.nii.gz`` (or ``imagesTr/<case>/`` holding a DICOM series),
``labelsTr/<case>.nii.gz`` and ``volume_labels.csv`` (``case,splenomegaly``)
for the volume classifier. Volumes are ~48-64 voxels a side so that training
on them is CPU-feasible.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt

from medres.data import SYNTHETIC_README
from medres.io.geometry import LPS_TO_RAS, stack_affine_ras
from medres.synthetic.dicom import write_ct_series

PHANTOM_LABELS: tuple[str, ...] = ("background", "liver", "spleen", "kidneys")
VOLUME_LABELS: tuple[str, ...] = ("splenomegaly",)
FIELD_OF_VIEW_MM = np.array([200.0, 160.0, 150.0])  # R-L, A-P, S-I extent, centred on the origin
AIR_HU, LIVER_HU, SPLEEN_HU, KIDNEY_HU, BONE_HU = -1000.0, 60.0, 45.0, 150.0, 700.0
NOISE_SD_HU = 8.0
STORAGE_ORIENTATIONS: tuple[str, ...] = ("RAS", "LPS", "PSL", "RAI", "oblique", "LAS")
"""Voxel-axis codes cycled over the NIfTI cases; ``oblique`` is RAS rotated 12 deg about S and 6 about R."""


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid in RAS+ mm: centre, semi-axes and a rotation about the S axis (radians)."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    angle: float = 0.0

    def contains(self, points_ras: np.ndarray) -> np.ndarray:
        """Which of ``(..., 3)`` RAS points lie inside."""
        offset = points_ras - np.asarray(self.centre)
        cosine, sine = np.cos(self.angle), np.sin(self.angle)
        local_x = cosine * offset[..., 0] + sine * offset[..., 1]
        local_y = -sine * offset[..., 0] + cosine * offset[..., 1]
        a, b, c = self.semi_axes
        return (local_x / a) ** 2 + (local_y / b) ** 2 + (offset[..., 2] / c) ** 2 <= 1.0


@dataclass(frozen=True)
class PhantomAnatomy:
    """One subject: body HU and the organs (label value, HU, shape), painted in order."""

    body: Ellipsoid
    body_hu: float
    organs: tuple[tuple[int, float, Ellipsoid], ...]
    splenomegaly: bool

    def sample(self, points_ras: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Hounsfield units (with noise) and labels at ``(..., 3)`` RAS points."""
        hounsfield = np.full(points_ras.shape[:-1], AIR_HU, np.float32)
        labels = np.zeros(points_ras.shape[:-1], np.uint8)
        hounsfield[self.body.contains(points_ras)] = self.body_hu
        for label, organ_hu, shape in self.organs:
            inside = shape.contains(points_ras)
            hounsfield[inside] = organ_hu
            labels[inside] = label
        hounsfield += rng.normal(0.0, NOISE_SD_HU, hounsfield.shape).astype(np.float32)
        return hounsfield, labels


def random_anatomy(rng: np.random.Generator, splenomegaly: bool) -> PhantomAnatomy:
    """A plausible abdomen with jittered organ positions, sizes and rotations.

    Organs sit on their real sides: RAS+ x grows towards the patient's right,
    so the liver is at positive x and the spleen at negative x (a viewer shows
    the liver on the screen's left in radiological convention). An enlarged
    spleen (splenomegaly) is 1.45x in every axis.
    HU: air -1000, body -110 to -70 (the abdominal fat that surrounds real
    organs on CT), liver 60, spleen 45, kidneys 150 (enhancing cortex), spine
    700 (unlabelled); Gaussian noise of 8 HU on top.
    """
    def jitter(centre, semi_axes, spread_mm=6.0, scale=1.0):
        moved = tuple(float(v + rng.uniform(-spread_mm, spread_mm)) for v in centre)
        sizes = tuple(float(v * scale * rng.uniform(0.88, 1.12)) for v in semi_axes)
        return Ellipsoid(moved, sizes, float(rng.uniform(-0.3, 0.3)))

    spleen_scale = 1.45 if splenomegaly else 1.0
    organs = (
        (0, BONE_HU, jitter((0.0, -45.0, 0.0), (13.0, 13.0, 400.0), spread_mm=2.0)),
        (3, KIDNEY_HU, jitter((42.0, -32.0, -25.0), (17.0, 16.0, 28.0))),
        (3, KIDNEY_HU, jitter((-42.0, -32.0, -28.0), (17.0, 16.0, 28.0))),
        (1, LIVER_HU, jitter((38.0, 8.0, 22.0), (42.0, 36.0, 38.0))),
        (2, SPLEEN_HU, jitter((-48.0, -18.0, 25.0), (17.0, 24.0, 28.0), scale=spleen_scale)),
    )
    body = Ellipsoid((0.0, 0.0, 0.0), (float(rng.uniform(82, 92)), float(rng.uniform(60, 68)), 1000.0))
    return PhantomAnatomy(body, float(rng.uniform(-110.0, -70.0)), organs, splenomegaly)


def grid_affine(axis_codes: str, spacing_ras: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """Affine and shape of a grid covering the field of view, stored in ``axis_codes`` order.

    ``spacing_ras`` gives the voxel size along R, A and S whichever voxel axis
    runs along it, so a permuted grid keeps the anatomy's sampling.
    """
    rotation = _oblique_rotation() if axis_codes == "oblique" else np.eye(3)
    orientation = axcodes2ornt("RAS" if axis_codes == "oblique" else axis_codes)
    affine = np.eye(4)
    shape = []
    for voxel_axis, (world_axis, sign) in enumerate(orientation.astype(int)):
        affine[:3, voxel_axis] = rotation[:, world_axis] * sign * spacing_ras[world_axis]
        shape.append(int(round(FIELD_OF_VIEW_MM[world_axis] / spacing_ras[world_axis])))
    centre_index = (np.asarray(shape) - 1) / 2.0
    shift = rng.uniform(-4.0, 4.0, 3)
    affine[:3, 3] = shift - affine[:3, :3] @ centre_index
    return affine, tuple(shape)


def _oblique_rotation() -> np.ndarray:
    about_s, about_r = np.deg2rad(12.0), np.deg2rad(6.0)
    rotate_s = np.array([[np.cos(about_s), -np.sin(about_s), 0], [np.sin(about_s), np.cos(about_s), 0], [0, 0, 1]])
    rotate_r = np.array([[1, 0, 0], [0, np.cos(about_r), -np.sin(about_r)], [0, np.sin(about_r), np.cos(about_r)]])
    return rotate_s @ rotate_r


def centred_affine(shape: tuple[int, ...], spacing_mm: float) -> np.ndarray:
    """An RAS+ affine of ``spacing_mm`` isotropic voxels whose grid is centred on the origin (the phantom's centre)."""
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) * spacing_mm / 2
    return affine


def voxel_centres_ras(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """RAS mm of every voxel centre, ``shape + (3,)``."""
    indices = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    return indices @ affine[:3, :3].T + affine[:3, 3]


def random_spacing(rng: np.random.Generator) -> np.ndarray:
    """Anisotropic CT-like spacing (R, A, S): 3.0-3.6 mm in plane, 4-5 mm between slices."""
    in_plane = round(rng.uniform(3.0, 3.6), 3)  # DICOM DS strings keep 3 decimals exactly
    return np.array([in_plane, in_plane, round(rng.uniform(4.0, 5.0), 3)])


def write_nifti_case(root: Path, case_id: str, anatomy: PhantomAnatomy, axis_codes: str,
                     rng: np.random.Generator) -> None:
    """Sample ``anatomy`` on a grid stored as ``axis_codes``; image (int16 HU) and labels as NIfTI."""
    affine, shape = grid_affine(axis_codes, random_spacing(rng), rng)
    hounsfield, labels = anatomy.sample(voxel_centres_ras(affine, shape), rng)
    image = nib.Nifti1Image(np.round(hounsfield).astype(np.int16), affine)
    image.header.set_xyzt_units("mm")
    nib.save(image, root / "imagesTr" / f"{case_id}.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"{case_id}.nii.gz")


def write_dicom_case(root: Path, case_id: str, anatomy: PhantomAnatomy, rng: np.random.Generator) -> None:
    """An axial CT series (LPS, as scanners store it) in ``imagesTr/<case>/``, labels as NIfTI.

    The label NIfTI uses the series' own voxel order (column, row, slice) and
    its RAS affine built by the reader's geometry code, so both describe one grid.
    """
    spacing = random_spacing(rng)
    orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    columns, rows, slices = (int(round(FIELD_OF_VIEW_MM[axis] / spacing[axis])) for axis in range(3))
    origin_lps = -(np.array([columns - 1, rows - 1, slices - 1]) * spacing) / 2.0 + rng.uniform(-4, 4, 3)
    affine = stack_affine_ras(origin_lps, orientation, (spacing[1], spacing[0]), (0.0, 0.0, spacing[2]))
    affine[:3, 3] = np.round(affine[:3, 3], 6)  # what the series' DS strings can hold
    hounsfield, labels = anatomy.sample(voxel_centres_ras(affine, (columns, rows, slices)), rng)
    write_ct_series(root / "imagesTr" / case_id, np.transpose(hounsfield, (2, 1, 0)),
                    origin=(LPS_TO_RAS[:3, :3] @ affine[:3, 3]).tolist(), orientation=orientation,
                    pixel_spacing=(float(spacing[1]), float(spacing[0])), slice_step=float(spacing[2]),
                    series_seed=f"phantom/{case_id}")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"{case_id}.nii.gz")


def make_ct_phantoms(root: str | Path, n_cases: int, seed: int, dicom_cases: int = 1) -> Path:
    """Write ``n_cases`` CT phantoms in the MSD layout under ``root``; returns ``root``.

    Args:
        root: Output folder (created).
        n_cases: Number of training cases; the last ``dicom_cases`` are DICOM series folders.
        seed: Everything (anatomy, grids, noise) follows from it.
        dicom_cases: How many cases are stored as DICOM series instead of NIfTI.
    """
    root = Path(root)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, volume_rows = [], []
    for index in range(n_cases):
        case_id = f"phantom_{seed:03d}_{index:03d}"
        anatomy = random_anatomy(rng, splenomegaly=index % 5 in (1, 3))
        is_dicom = index >= n_cases - dicom_cases
        if is_dicom:
            write_dicom_case(root, case_id, anatomy, rng)
        else:
            write_nifti_case(root, case_id, anatomy, STORAGE_ORIENTATIONS[index % len(STORAGE_ORIENTATIONS)], rng)
        image_name = case_id if is_dicom else f"{case_id}.nii.gz"
        entries.append({"image": f"./imagesTr/{image_name}", "label": f"./labelsTr/{case_id}.nii.gz"})
        volume_rows.append({"case": case_id, "splenomegaly": int(anatomy.splenomegaly)})
    _write_dataset_json(root, entries)
    (root / SYNTHETIC_README).write_text(
        "THIS DATA IS SYNTHETIC: CT ellipsoid phantoms written by medres.synthetic.phantoms.make_ct_phantoms"
        f"(n_cases={n_cases}, seed={seed}); no patient, no real scan.\n")
    with open(root / "volume_labels.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["case", *VOLUME_LABELS])
        writer.writeheader()
        writer.writerows(volume_rows)
    return root


def _write_dataset_json(root: Path, entries: list[dict[str, str]]) -> None:
    description = {
        "name": "medres CT phantoms",
        "description": "Synthetic abdominal CT ellipsoid phantoms (medres.synthetic.phantoms); no patient data.",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(value): name for value, name in enumerate(PHANTOM_LABELS)},
        "numTraining": len(entries),
        "numTest": 0,
        "training": entries,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
