"""A synthetic ChestX-ray14 in NIH's exact folder layout, for tests, demos and smoke training.

The real data set is 45 GB behind a manual download, so tests and the demo
need a stand-in that exercises the same code paths: the v2020 Data_Entry CSV
with several follow-up films per patient, the official list files (disjoint by
patient), ``BBox_List_2017.csv`` with NIH's ``Infiltrate`` spelling, and PNGs
under ``images/`` or the 12 archive folders. Every finding is drawn as a
localized pattern (see :mod:`medres.synthetic.findings`) so a small CNN can
reach a high AUROC in minutes, which makes "training works" checkable on a CPU.
Output is byte-for-byte deterministic for a given seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage

from medres.data import SYNTHETIC_README
from medres.data.chestxray14 import (
    ARCHIVE_FOLDERS,
    BOX_FILE,
    BOX_LABELS,
    LABEL_FILES,
    LABELS,
    NO_FINDING,
    TEST_LIST,
    TRAIN_VAL_LIST,
)
from medres.errors import UsageError
from medres.synthetic.findings import (
    AIR_LEVEL,
    FINDING_PAINTERS,
    PAINT_ORDER,
    Anatomy,
    Box,
    Canvas,
    box_mask,
    eighth_power,
    ellipse,
    inside,
    lung_radius,
)

LAYOUTS: tuple[str, ...] = ("images", "archives")
# Share of all images with each label: the real ordering (Infiltration most,
# Hernia least), boosted so even a few hundred images have positives of each.
LABEL_PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.14, "Cardiomegaly": 0.09, "Effusion": 0.15, "Infiltration": 0.18, "Mass": 0.11,
    "Nodule": 0.12, "Pneumonia": 0.09, "Pneumothorax": 0.10, "Consolidation": 0.10, "Edema": 0.09,
    "Emphysema": 0.09, "Fibrosis": 0.09, "Pleural_Thickening": 0.10, "Hernia": 0.09,
}
NO_FINDING_SHARE = 0.4
IMAGES_PER_PATIENT = 3.5  # the real data has 112,120 / 30,805 = 3.6
TEST_PATIENT_SHARE = 0.2
FIELD_OF_VIEW_MM = 360.0
_CSV_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
               "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
_BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


def make_chestxray14(
    root: str | os.PathLike[str],
    n_images: int,
    seed: int = 0,
    image_size: int = 256,
    n_patients: int | None = None,
    with_split_lists: bool = True,
    layout: str = "images",
) -> Path:
    """Write a synthetic ChestX-ray14 folder and return its path.

    Args:
        root: Folder to write into (created if needed; files of the same names are replaced).
        n_images: Number of radiographs.
        seed: Everything (patients, labels, pixels, splits) follows from it.
        image_size: Side of the square 8-bit PNGs; box coordinates are in these pixels.
        n_patients: Default: about 3.5 images per patient, like the real data.
        with_split_lists: Write ``train_val_list.txt`` and ``test_list.txt`` (20 % of patients in test).
        layout: ``"images"`` for ``root/images/``, ``"archives"`` to spread the files over
            ``images_001/images/`` ... ``images_012/images/`` as the 12 NIH archives extract.
    """
    n_patients = _check_arguments(n_images, image_size, n_patients, layout)
    root = Path(root)
    rng = np.random.default_rng([seed, 0])
    plan = _plan_images(n_images, n_patients, rng)
    folders = _image_folders(root, plan.names, layout)
    box_lines = _draw_images(plan, folders, seed, image_size)
    spacing = FIELD_OF_VIEW_MM / image_size
    entry_lines = [f"{name},{_finding_text(plan.labels[number])},{plan.follow_ups[number]},"
                   f"{plan.patient_ids[number]},{plan.ages[number]},{plan.sexes[number]},{plan.views[number]},"
                   f"{image_size},{image_size},{spacing:.4f},{spacing:.4f}" for number, name in enumerate(plan.names)]
    _write_lines(root / LABEL_FILES[0][0], [_CSV_HEADER, *entry_lines])
    _write_lines(root / BOX_FILE, [_BOX_HEADER, *box_lines])
    if with_split_lists:
        _write_split_lists(root, plan.names, plan.patient_ids, rng)
    _write_readme(root, n_images, n_patients, seed, image_size)
    return root


@dataclass(frozen=True)
class _ImagePlan:
    """Who and what each image shows, decided before any pixel is drawn."""

    names: list[str]
    patient_ids: np.ndarray
    follow_ups: np.ndarray
    labels: np.ndarray
    views: np.ndarray
    sexes: np.ndarray
    ages: np.ndarray


def _plan_images(n_images: int, n_patients: int, rng: np.random.Generator) -> _ImagePlan:
    """Patients, follow-ups, labels and demographics of every image (ages grow with follow-ups)."""
    patient_ids, follow_ups = _plan_patients(n_images, n_patients, rng)
    labels = _plan_labels(n_images, rng)
    patient_sexes = np.where(rng.random(n_patients) < 0.56, "M", "F")
    first_ages = np.clip(rng.normal(47, 17, n_patients), 2, 92).astype(int)
    views = np.where(rng.random(n_images) < 0.6, "PA", "AP")
    names = [f"{patient:08d}_{follow_up:03d}.png" for patient, follow_up in zip(patient_ids, follow_ups)]
    return _ImagePlan(names, patient_ids, follow_ups, labels, views, patient_sexes[patient_ids - 1],
                      first_ages[patient_ids - 1] + follow_ups // 3)


def _draw_images(plan: _ImagePlan, folders: Sequence[Path], seed: int, image_size: int) -> list[str]:
    """Render and save every PNG; return the bounding-box CSV lines in image order.

    Each image has its own generator seeded by ``(seed, number)`` and each
    patient's anatomy by ``(seed, patient)``, so the bytes do not depend on the
    thread schedule. Threads help because NumPy, SciPy and Pillow's PNG encoder
    release the GIL on whole images.
    """
    anatomies = {int(patient): sample_anatomy(np.random.default_rng([seed, 1, int(patient)]))
                 for patient in np.unique(plan.patient_ids)}

    def draw(number: int) -> list[str]:
        image_rng = np.random.default_rng([seed, 2, number])
        anatomy = jitter_anatomy(anatomies[int(plan.patient_ids[number])], image_rng)
        image_labels = [label for label, present in zip(LABELS, plan.labels[number]) if present]
        pixels, boxes = render_radiograph(anatomy, image_labels, image_rng, image_size, str(plan.views[number]))
        name = plan.names[number]
        PILImage.fromarray(pixels).save(folders[number] / name, format="PNG", compress_level=6)
        return [_box_line(name, label, box) for label, box in boxes.items() if label in BOX_LABELS]

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return [line for lines in pool.map(draw, range(len(plan.names))) for line in lines]


def render_radiograph(
    anatomy: Anatomy, labels: Sequence[str], rng: np.random.Generator, image_size: int, view: str
) -> tuple[np.ndarray, dict[str, Box]]:
    """An 8-bit radiograph showing ``labels`` and the pixel box of each finding drawn.

    Findings are painted in ``PAINT_ORDER`` (lung-wide changes first, small
    opacities last) so that no pattern erases another.
    """
    canvas = new_canvas(anatomy, rng, image_size)
    paint_anatomy(canvas)
    boxes = {label: FINDING_PAINTERS[label](canvas) for label in PAINT_ORDER if label in labels}
    return _expose(canvas, rng, view), boxes


def new_canvas(anatomy: Anatomy, rng: np.random.Generator, image_size: int) -> Canvas:
    """A black square canvas with pixel-centre coordinates in fractions of the side."""
    coordinates = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    return Canvas(np.zeros((image_size, image_size), np.float32), coordinates[:, None], coordinates[None, :],
                  anatomy, rng)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A patient's anatomy: sizes and brightness vary between patients, not between their films."""
    lung_radius_x = rng.uniform(0.14, 0.165)
    return Anatomy(
        midline_x=rng.uniform(0.48, 0.52), lung_center_y=rng.uniform(0.44, 0.48),
        lung_offset_x=lung_radius_x + rng.uniform(0.05, 0.07), lung_radius_x=lung_radius_x,
        lung_radius_y=rng.uniform(0.27, 0.31), heart_offset_x=rng.uniform(0.035, 0.055),
        heart_center_y=rng.uniform(0.6, 0.64), heart_radius_x=rng.uniform(0.125, 0.145),
        heart_radius_y=rng.uniform(0.1, 0.12), body_radius_x=rng.uniform(0.42, 0.47),
        lung_level=rng.uniform(0.2, 0.26), tissue_level=rng.uniform(0.5, 0.58),
        mediastinum_level=rng.uniform(0.68, 0.76), rib_period=rng.uniform(0.075, 0.09),
        rib_phase=rng.uniform(0, 2 * np.pi),
    )


def jitter_anatomy(anatomy: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The same patient on another day: slightly different position and depth of inspiration."""
    return replace(anatomy, midline_x=anatomy.midline_x + rng.uniform(-0.015, 0.015),
                   lung_center_y=anatomy.lung_center_y + rng.uniform(-0.01, 0.01),
                   lung_radius_y=anatomy.lung_radius_y * rng.uniform(0.97, 1.03))


def paint_anatomy(canvas: Canvas) -> None:
    """Body, dark lungs with faint ribs and hilar vessels, bright mediastinum, heart and spine."""
    anatomy, x, y = canvas.anatomy, canvas.x, canvas.y
    body = ellipse(canvas, anatomy.midline_x, 0.72, anatomy.body_radius_x, 0.75, softness=0.015)
    canvas.pixels[:] = AIR_LEVEL + (anatomy.tissue_level - AIR_LEVEL) * body
    for side in (-1, 1):
        center_x = anatomy.lung_center_x(side)
        lung = inside(lung_radius(canvas, side), canvas, anatomy.lung_radius_x, softness=0.008)
        canvas.lungs[side] = lung
        ribs = eighth_power(np.sin(2 * np.pi / anatomy.rib_period * (y + 0.9 * (x - center_x) ** 2)
                                    + anatomy.rib_phase))
        hilum = ((x - anatomy.midline_x - side * 0.08) / 0.12) ** 2 + ((y - anatomy.lung_center_y) / 0.15) ** 2
        lung_pixels = anatomy.lung_level + 0.05 * ribs + 0.06 * np.exp(-hilum)
        canvas.pixels[:] = canvas.pixels * (1 - lung) + lung_pixels * lung
    top = anatomy.lung_center_y - anatomy.lung_radius_y
    mediastinum = box_mask(canvas, anatomy.midline_x, (top + anatomy.heart_center_y) / 2, 0.05,
                           (anatomy.heart_center_y - top) / 2, softness=0.01)
    heart = ellipse(canvas, anatomy.midline_x + anatomy.heart_offset_x, anatomy.heart_center_y,
                    anatomy.heart_radius_x, anatomy.heart_radius_y, softness=0.008)
    canvas.solid = np.maximum(mediastinum, heart)
    canvas.pixels[:] = canvas.pixels * (1 - canvas.solid) + anatomy.mediastinum_level * canvas.solid
    canvas.pixels += 0.05 * box_mask(canvas, anatomy.midline_x, 0.6, 0.025, 0.6, softness=0.008)


def _expose(canvas: Canvas, rng: np.random.Generator, view: str) -> np.ndarray:
    """Detector blur, exposure, gradient, noise and 8-bit quantisation; AP films are flatter and noisier."""
    pixels = ndimage.gaussian_filter(canvas.pixels, sigma=0.6 * canvas.pixels.shape[0] / 256)
    contrast = rng.uniform(0.9, 1.08) * (0.92 if view == "AP" else 1.0)
    gradient = rng.uniform(-0.04, 0.04) * (canvas.y - 0.5) + rng.uniform(-0.03, 0.03) * (canvas.x - 0.5)
    pixels = (pixels - 0.4) * contrast + 0.4 + rng.uniform(-0.03, 0.03) + gradient
    noise_level = rng.uniform(0.012, 0.025) * (1.3 if view == "AP" else 1.0)
    pixels = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * noise_level
    return np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)


def _plan_patients(n_images: int, n_patients: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Patient id (1-based) and follow-up number of every image; each patient has at least one."""
    weights = rng.exponential(size=n_patients)
    images_per_patient = 1 + rng.multinomial(n_images - n_patients, weights / weights.sum())
    patient_ids = np.repeat(np.arange(1, n_patients + 1), images_per_patient)
    first_image = np.repeat(np.cumsum(images_per_patient) - images_per_patient, images_per_patient)
    return patient_ids, np.arange(n_images) - first_image


def _plan_labels(n_images: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_images, 14)`` booleans: ~40 % No Finding, the rest one or more labels at ``LABEL_PREVALENCE``."""
    prevalence = np.array([LABEL_PREVALENCE[label] for label in LABELS])
    abnormal = rng.random(n_images) >= NO_FINDING_SHARE
    labels = (rng.random((n_images, len(LABELS))) < prevalence / (1 - NO_FINDING_SHARE)) & abnormal[:, None]
    empty = abnormal & ~labels.any(axis=1)
    labels[np.flatnonzero(empty), rng.choice(len(LABELS), empty.sum(), p=prevalence / prevalence.sum())] = True
    return labels


def _image_folders(root: Path, names: Sequence[str], layout: str) -> list[Path]:
    """Folder of each image: ``images/``, or contiguous name ranges over the 12 archive folders like NIH's."""
    if layout == "images":
        folders = [root / "images"] * len(names)
    else:
        order = np.argsort(names, kind="stable")
        archive_of = np.empty(len(names), dtype=int)
        for archive, chunk in enumerate(np.array_split(order, len(ARCHIVE_FOLDERS))):
            archive_of[chunk] = archive
        folders = [root / ARCHIVE_FOLDERS[archive] / "images" for archive in archive_of]
    for folder in sorted(set(folders)):
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def _write_split_lists(root: Path, names: Sequence[str], patient_ids: np.ndarray, rng: np.random.Generator) -> None:
    """Official-style lists: a seeded 20 % of patients in ``test_list.txt``, the rest in ``train_val_list.txt``."""
    patients = np.unique(patient_ids)
    n_test = min(len(patients) - 1, max(1, round(TEST_PATIENT_SHARE * len(patients)))) if len(patients) > 1 else 0
    test_patients = set(rng.permutation(patients)[:n_test].tolist())
    in_test = [int(patient) in test_patients for patient in patient_ids]
    _write_lines(root / TEST_LIST, sorted(name for name, test in zip(names, in_test) if test))
    _write_lines(root / TRAIN_VAL_LIST, sorted(name for name, test in zip(names, in_test) if not test))


def _finding_text(image_labels: np.ndarray) -> str:
    present = sorted(label for label, flag in zip(LABELS, image_labels) if flag)
    return "|".join(present) if present else NO_FINDING


def _box_line(name: str, label: str, box: Box) -> str:
    spelled = "Infiltrate" if label == "Infiltration" else label
    return f"{name},{spelled}," + ",".join(f"{value:.1f}" for value in box) + ",,,"


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _write_readme(root: Path, n_images: int, n_patients: int, seed: int, image_size: int) -> None:
    _write_lines(root / SYNTHETIC_README, [
        "THIS DATA IS SYNTHETIC. It contains no real patients and no real radiographs.",
        "",
        f"Written by medres.synthetic.chestxray14.make_chestxray14(n_images={n_images}, seed={seed}, "
        f"image_size={image_size}) for {n_patients} invented patients.",
        "The folder mimics the layout of NIH ChestX-ray14 (Data_Entry_2017_v2020.csv, BBox_List_2017.csv,",
        "train_val_list.txt, test_list.txt, images/) so that code can be tested without the 45 GB download.",
        "Each finding is a drawn, deliberately easy pattern (e.g. Nodule = small bright disk, Hernia = gas",
        "bubble behind the heart); boxes in BBox_List_2017.csv are in pixels of these images and are given",
        "for every positive image of the 8 box labels. Results on this data say nothing about real chest",
        "X-rays. Never use it, or models trained on it, for any clinical purpose.",
    ])


def _check_arguments(n_images: int, image_size: int, n_patients: int | None, layout: str) -> int:
    if n_images < 1:
        raise UsageError(f"n_images must be at least 1, got {n_images}")
    if image_size < 32:
        raise UsageError(f"image_size must be at least 32 pixels, got {image_size}")
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    n_patients = max(1, round(n_images / IMAGES_PER_PATIENT)) if n_patients is None else n_patients
    if not 1 <= n_patients <= n_images:
        raise UsageError(f"n_patients must be between 1 and n_images ({n_images}), got {n_patients}")
    return n_patients
