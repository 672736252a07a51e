"""Volume data sets as their publishers lay them out: MSD and nnU-Net raw folders.

Two layouts are recognised from ``dataset.json``:

* **Medical Segmentation Decathlon**: ``modality`` ({"0": "CT"}), ``labels``
  ({"0": "background", "1": "liver"}) and a ``training`` list of
  ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``;
  ``test`` lists ``imagesTs`` paths. A 4D image holds all channels.
* **nnU-Net raw (v2)**: ``channel_names`` ({"0": "CT"}), ``labels``
  ({"background": 0, "liver": 1}) and ``file_ending``; images are
  ``imagesTr/<case>_<channel:04d><ending>``, labels ``labelsTr/<case><ending>``.

In both, an image may instead be a folder holding one DICOM series
(``imagesTr/<case>/`` or ``imagesTr/<case>_0000/``). Every case is read with
:func:`medres.io.read_image`, so image and label arrive in one RAS+ voxel
order, and :func:`check_case_geometry` refuses a label whose grid differs,
naming the case.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medres.errors import DatasetLayoutError, GeometryMismatchError, NotFoundError, UnknownLabelError
from medres.io import Image, read_image

AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference (mm, per affine entry) between an image's and its label's affine."""
VOLUME_LABELS_FILE = "volume_labels.csv"
CT_MODALITY = "CT"


@dataclass(frozen=True)
class VolumeCase:
    """One case: its channel images (NIfTI files or DICOM series folders) and optional label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class VolumeDataset:
    """A segmentation data set: label names (index = value, 0 = background), channels, cases."""

    root: Path
    layout: str
    labels: tuple[str, ...]
    channel_names: tuple[str, ...]
    training: tuple[VolumeCase, ...]
    test: tuple[VolumeCase, ...] = ()

    @property
    def modality(self) -> str:
        """Modality of the first channel ("CT", "MR", ...), which decides the intensity normalisation."""
        return self.channel_names[0].upper() if self.channel_names else "OT"

    def summary(self) -> str:
        return (f"{self.root} ({self.layout}): {len(self.training)} training and {len(self.test)} test cases; "
                f"channels {', '.join(self.channel_names)}; labels {', '.join(self.labels)}")


def load_volume_dataset(root: str | Path) -> VolumeDataset:
    """Read ``dataset.json`` and list the cases of an MSD or nnU-Net raw folder.

    Raises:
        DatasetLayoutError: No ``dataset.json``, neither layout, or a listed file missing.
    """
    root = Path(root)
    description_path = root / "dataset.json"
    if not description_path.is_file():
        raise DatasetLayoutError(
            "no dataset.json: expected a Medical Segmentation Decathlon or nnU-Net raw folder "
            "(dataset.json, imagesTr/, labelsTr/)", path=root)
    try:
        description = json.loads(description_path.read_text())
    except ValueError as error:
        raise DatasetLayoutError(f"dataset.json is not valid JSON ({error})", path=description_path) from None
    if "channel_names" in description:
        return _nnunet_dataset(root, description)
    if "training" in description or "modality" in description:
        return _msd_dataset(root, description)
    raise DatasetLayoutError("dataset.json has neither MSD keys (modality, training) nor nnU-Net keys "
                             "(channel_names, file_ending)", path=description_path)


def _msd_dataset(root: Path, description: dict[str, Any]) -> VolumeDataset:
    labels = _labels_by_value({int(value): name for value, name in description.get("labels", {}).items()}, root)
    channels = tuple(name for _, name in sorted(description.get("modality", {"0": "OT"}).items(), key=_int_key))
    training = tuple(
        VolumeCase(_case_id(entry["image"]), (_existing(root, entry["image"]),),
                   _existing(root, entry["label"]) if entry.get("label") else None)
        for entry in description.get("training", [])
    )
    test = tuple(VolumeCase(_case_id(entry), (_existing(root, entry),)) for entry in description.get("test", []))
    if not training:
        raise DatasetLayoutError("dataset.json lists no training cases", path=root / "dataset.json")
    return VolumeDataset(root, "msd", labels, channels, training, test)


def _nnunet_dataset(root: Path, description: dict[str, Any]) -> VolumeDataset:
    labels = _labels_by_value({int(value): name for name, value in description.get("labels", {}).items()}, root)
    channels = tuple(name for _, name in sorted(description["channel_names"].items(), key=_int_key))
    ending = description.get("file_ending", ".nii.gz")
    training = _nnunet_cases(root / "imagesTr", root / "labelsTr", len(channels), ending)
    test = _nnunet_cases(root / "imagesTs", None, len(channels), ending)
    if not training:
        raise DatasetLayoutError(f"imagesTr holds no <case>_0000{ending} files or <case>_0000/ DICOM folders",
                                 path=root)
    return VolumeDataset(root, "nnunet", labels, channels, training, test)


def _nnunet_cases(images: Path, labels: Path | None, n_channels: int, ending: str) -> tuple[VolumeCase, ...]:
    if not images.is_dir():
        return ()
    cases = []
    for first in sorted(images.iterdir()):
        name = first.name
        stem = name[: -len(ending)] if name.endswith(ending) else name if first.is_dir() else ""
        if not stem.endswith("_0000"):
            continue
        case_id = stem[:-5]
        channel_paths = tuple(_channel_path(images, case_id, channel, ending) for channel in range(n_channels))
        label = None if labels is None else _existing(labels.parent, f"{labels.name}/{case_id}{ending}")
        cases.append(VolumeCase(case_id, channel_paths, label))
    return tuple(cases)


def _channel_path(images: Path, case_id: str, channel: int, ending: str) -> Path:
    for candidate in (images / f"{case_id}_{channel:04d}{ending}", images / f"{case_id}_{channel:04d}"):
        if candidate.exists():
            return candidate
    raise DatasetLayoutError(f"case {case_id}: channel {channel} ({case_id}_{channel:04d}{ending}) is missing",
                             path=images)


def _labels_by_value(by_value: dict[int, str], root: Path) -> tuple[str, ...]:
    if not by_value or sorted(by_value) != list(range(len(by_value))):
        raise DatasetLayoutError(f"dataset.json labels must be numbered 0..N-1 with 0 = background, got "
                                 f"{by_value}", path=root / "dataset.json")
    return tuple(str(by_value[value]) for value in range(len(by_value)))


def _int_key(item: tuple[str, Any]) -> int:
    return int(item[0])


def _case_id(relative: str) -> str:
    name = Path(relative).name
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def _existing(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if not path.exists():
        raise NotFoundError(f"listed in dataset.json but missing: {relative}", path=root)
    return path


def read_case(case: VolumeCase) -> tuple[Image, Image | None]:
    """The case's image (channels stacked) and label, both RAS+, after the geometry check."""
    channels = [read_image(path) for path in case.images]
    for other, path in zip(channels[1:], case.images[1:]):
        check_case_geometry(case.case_id, channels[0], other, f"channel {path.name}")
    image = channels[0]
    if len(channels) > 1:
        stacked = np.concatenate([channel.array for channel in channels])
        image = Image(stacked, image.spacing, image.affine, image.meta, image.modality)
    label = read_image(case.label) if case.label is not None else None
    if label is not None:
        check_case_geometry(case.case_id, image, label, "label")
    return image, label


def check_case_geometry(case_id: str, image: Image, other: Image, what: str,
                        tolerance_mm: float = AFFINE_TOLERANCE_MM) -> None:
    """Refuse an ``other`` image (label, channel, prediction) whose voxel grid differs from ``image``'s.

    Raises:
        GeometryMismatchError: Different shape, or an affine entry off by more than ``tolerance_mm``.
    """
    if image.spatial_shape != other.spatial_shape:
        raise GeometryMismatchError(
            f"case {case_id}: the {what} is {_shape_text(other)} voxels but the image is {_shape_text(image)} "
            "(after reorienting both to RAS); they must share one grid")
    difference = float(np.abs(np.asarray(image.affine) - np.asarray(other.affine)).max())
    if difference > tolerance_mm:
        raise GeometryMismatchError(
            f"case {case_id}: the {what}'s affine differs from the image's by up to {difference:.4g} mm "
            f"(tolerance {tolerance_mm:g} mm); resample the {what} onto the image grid")


def _shape_text(image: Image) -> str:
    return "x".join(str(size) for size in image.spatial_shape)


def label_volume(label: Image, case_id: str, n_labels: int) -> np.ndarray:
    """A label image as a uint8 ``(X, Y, Z)`` array of values ``0..n_labels-1``.

    Raises:
        UnknownLabelError: A value that is not an integer or not one of the data set's labels.
    """
    values = label.array[0]
    rounded = np.rint(values)
    if not np.array_equal(values, rounded) or rounded.min() < 0 or rounded.max() >= n_labels:
        found = np.unique(values)[:10]
        raise UnknownLabelError(f"case {case_id}: label values must be integers 0..{n_labels - 1} as dataset.json "
                                f"lists them, found {found.tolist()}")
    return rounded.astype(np.uint8)


def read_volume_labels(path: str | Path,
                       case_ids: list[str] | None = None) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Volume-level labels: a CSV with ``case`` then one 0/1 column per label.

    Returns:
        The label names (CSV column order) and ``{case: float32 vector}``.

    Raises:
        DatasetLayoutError: Missing ``case`` column, a value other than 0/1, or a listed case without a row.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError("no volume label CSV (columns: case, then one 0/1 column per label)", path=path)
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        columns = list(reader.fieldnames or [])
        if not columns or columns[0] != "case" or len(columns) < 2:
            raise DatasetLayoutError("the first column must be 'case', followed by label columns", path=path)
        rows = list(reader)
    names = tuple(columns[1:])
    targets = {}
    for line, row in enumerate(rows, start=2):
        values = [row[name].strip() for name in names]
        if any(value not in ("0", "1") for value in values):
            raise DatasetLayoutError(f"line {line}: label values must be 0 or 1, got {values}", path=path)
        targets[row["case"]] = np.asarray(values, dtype=np.float32)
    missing = sorted(set(case_ids or []) - set(targets))
    if missing:
        raise DatasetLayoutError(f"no labels for {len(missing)} case(s), e.g. {', '.join(missing[:3])}", path=path)
    return names, targets
