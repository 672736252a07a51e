"""Segmentations for the volume view: label files, the seg model on demand, names, volumes in mL.

A label volume is shown only when it shares the image's voxel grid (same
shape and, within a small tolerance, the same affine): overlaying a label
from another grid would put structures in the wrong place without any sign
of it, so a mismatch is an error with a message, never a silent resample.

Label values are named the way the reader's data names them: from the
segmentation model's card for the model's own output, from the
``volumes.json`` that ``medres segment`` writes beside its
``segmentation.nii.gz``, or from the data set's ``dataset.json`` (MSD or
nnU-Net layout) found above the file. Only when none of these exists is a
value called "label N"; the view says which source the names came from.

Running the segmentation model uses ``medres.segment``, imported only when
asked for, so the app works (with a clear message) before segmentation
support is installed.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medres.errors import LabelGeometryError, SegmentationUnavailableError
from medres.io import Image
from medres.metrics.volumes import volume_ml

AFFINE_TOLERANCE_MM = 1e-3
SEGMENT_MODULE = "medres.segment"
SEGMENT_FUNCTIONS: tuple[str, ...] = ("segment_image", "segment_volume", "segment")
ProgressCallback = Callable[[float], None]
SEGMENT_SUMMARY_NAME = "volumes.json"  # medres.segment.pipeline.VOLUMES_NAME, read without importing segment
DATASET_DESCRIPTION_NAME = "dataset.json"


def check_same_grid(image: Image, label: Image) -> np.ndarray:
    """The label array ``(X, Y, Z)`` as integers, after checking it lies on the image's grid.

    Raises:
        LabelGeometryError: Different shape or affine (beyond ``AFFINE_TOLERANCE_MM``).
    """
    if not label.is_volume or label.spatial_shape[:3] != image.spatial_shape[:3]:
        raise LabelGeometryError(f"label shape {label.spatial_shape} differs from the image's {image.spatial_shape}")
    if not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
        raise LabelGeometryError("the label's affine (orientation, spacing or origin) differs from the image's")
    values = np.asarray(label.array[0])
    if not np.allclose(values, np.round(values)):
        raise LabelGeometryError("the label volume holds non-integer values; is it an image rather than labels?")
    return np.round(values).astype(np.int32)


def label_volumes(labels: np.ndarray, affine: np.ndarray, names: Mapping[int, str]) -> pd.DataFrame:
    """Voxel count and volume in millilitres of each non-zero label present.

    The volume is :func:`medres.metrics.volumes.volume_ml`, the same number
    ``medres segment`` writes into ``volumes.json``.

    Args:
        labels: Integer labels on the image's grid.
        affine: That grid's voxel-to-millimetre affine (the image's ``affine``).
        names: The name of each label value.
    """
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return pd.DataFrame({
        "label": [int(value) for value in values],
        "name": [names.get(int(value), f"label {int(value)}") for value in values],
        "voxels": [int(count) for count in counts],
        "volume_ml": [volume_ml(count, affine) for count in counts],
    })


def label_names(values: Sequence[int], model_labels: Sequence[str] | None = None) -> dict[int, str]:
    """Names for label values: the seg model's labels (value ``i`` -> ``labels[i]``) when known."""
    names = {}
    for value in values:
        value = int(value)
        known = model_labels is not None and 0 <= value < len(model_labels)
        names[value] = model_labels[value] if known else f"label {value}"
    return names


@dataclass(frozen=True)
class LabelNames:
    """Names of label values (index = value, 0 = background) and where they were found.

    Attributes:
        names: The name of each value, in value order.
        source: A short phrase for the reader ("the segmentation model's card", a file's path ...).
    """

    names: tuple[str, ...]
    source: str

    def for_values(self, values: Sequence[int]) -> dict[int, str]:
        """Names of ``values`` (see :func:`label_names`)."""
        return label_names(values, self.names)


def names_from_card(labels: Sequence[str]) -> LabelNames:
    """The names a segmentation checkpoint's card gives its output channels."""
    return LabelNames(tuple(str(name) for name in labels), "the segmentation model's card")


def names_for_label_file(label_path: Path, image_path: Path | None, root: Path | None) -> LabelNames | None:
    """Names for a label file: ``medres segment``'s summary beside it, else the nearest ``dataset.json``.

    ``dataset.json`` is looked for in the label file's folder and its parents,
    then the image's, never above ``root`` (the app reads nothing outside it).
    """
    from_segment = names_from_segment_summary(label_path.parent / SEGMENT_SUMMARY_NAME)
    if from_segment is not None:
        return from_segment
    for start in (label_path, image_path):
        for folder in _folders_up_to(start, root):
            found = names_from_dataset_json(folder / DATASET_DESCRIPTION_NAME)
            if found is not None:
                return found
    return None


def names_from_segment_summary(path: Path) -> LabelNames | None:
    """Names from the ``volumes.json`` of ``medres segment``; None when absent or not that file.

    Its ``label_names`` list (value order) is used when present; otherwise the
    keys of ``label_volumes_ml``, which ``medres segment`` writes for values
    1, 2, ... in order, preceded by the background.
    """
    description = _read_json(path)
    if not isinstance(description, dict):
        return None
    names = description.get("label_names")
    if isinstance(names, list) and names:
        return LabelNames(tuple(str(name) for name in names), f"{path.name} written by `medres segment`")
    volumes = description.get("label_volumes_ml")
    if isinstance(volumes, dict) and volumes:
        return LabelNames(("background", *(str(name) for name in volumes)), f"{path.name} written by `medres segment`")
    return None


def names_from_dataset_json(path: Path) -> LabelNames | None:
    """Names from a data set's ``dataset.json``: MSD (``{"1": "liver"}``) or nnU-Net v2 (``{"liver": 1}``).

    nnU-Net region labels (a name mapped to a list of values) are left out;
    None when the file is absent, unreadable or has no ``labels``.
    """
    description = _read_json(path)
    labels = description.get("labels") if isinstance(description, dict) else None
    if not isinstance(labels, dict) or not labels:
        return None
    by_value: dict[int, str] = {}
    for key, value in labels.items():
        if str(key).isdigit():
            by_value[int(key)] = str(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            by_value[value] = str(key)
    if not by_value:
        return None
    names = tuple(by_value.get(value, f"label {value}") for value in range(max(by_value) + 1))
    return LabelNames(names, f"{path.parent.name}/{path.name}")


def _folders_up_to(start: Path | None, root: Path | None) -> list[Path]:
    """``start``'s folder and its parents, stopping at ``root`` (none at all when ``start`` is outside it)."""
    if start is None or root is None:
        return []
    real_root = Path(root).resolve()
    folder = Path(start).resolve()
    folder = folder if folder.is_dir() else folder.parent
    if folder != real_root and real_root not in folder.parents:
        return []
    folders = [folder]
    while folder != real_root:
        folder = folder.parent
        folders.append(folder)
    return folders


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def run_segmentation(model: object, image: Image, progress: ProgressCallback | None = None) -> np.ndarray:
    """Segment ``image`` with a seg model through ``medres.segment``; returns labels on the image's grid.

    ``medres.segment`` is expected to offer ``segment_image(model, image, progress=None)``
    returning an ``Image`` or array on the input grid (``segment_volume`` and
    ``segment`` are accepted as names too).

    Raises:
        SegmentationUnavailableError: The module or a suitable function is missing.
        LabelGeometryError: The result is not on the image's grid.
    """
    try:
        module = importlib.import_module(SEGMENT_MODULE)
    except ImportError:
        raise SegmentationUnavailableError() from None
    function = next((getattr(module, name) for name in SEGMENT_FUNCTIONS if callable(getattr(module, name, None))),
                    None)
    if function is None:
        raise SegmentationUnavailableError(f"{SEGMENT_MODULE} has none of {', '.join(SEGMENT_FUNCTIONS)}")
    accepts_progress = "progress" in inspect.signature(function).parameters
    result = function(model, image, progress=progress) if accepts_progress else function(model, image)
    labels = np.asarray(result.array[0] if isinstance(result, Image) else result)
    labels = labels[0] if labels.ndim == 4 else labels
    if labels.shape != image.spatial_shape[:3]:
        raise LabelGeometryError(f"the segmentation's shape {labels.shape} differs from the image's")
    if progress is not None:
        progress(1.0)
    return np.round(labels).astype(np.int32)
