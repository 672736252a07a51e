"""Segmentations for the volume view: label files, the seg model on demand, volumes in mL.

A label volume is shown only when it shares the image's voxel grid (same
shape and, within a small tolerance, the same affine): overlaying a label
from another grid would put structures in the wrong place without any sign
of it, so a mismatch is an error with a message, never a silent resample.

Running the segmentation model uses ``medres.segment``, imported only when
asked for, so the app works (with a clear message) before segmentation
support is installed.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from medres.errors import MedresError
from medres.io import Image

AFFINE_TOLERANCE_MM = 1e-3
SEGMENT_MODULE = "medres.segment"
SEGMENT_FUNCTIONS: tuple[str, ...] = ("segment_image", "segment_volume", "segment")
ProgressCallback = Callable[[float], None]


class LabelGeometryError(MedresError):
    reason = "geometry_mismatch"
    default_message = "the label volume is not on the image's voxel grid; resample it onto the image first"


class SegmentationUnavailableError(MedresError):
    reason = "segmentation_unavailable"
    default_message = (
        "segmentation support is not installed yet (no medres.segment); "
        "open a label NIfTI in the image's geometry instead"
    )


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


def label_volumes(labels: np.ndarray, spacing: Sequence[float], names: Mapping[int, str]) -> pd.DataFrame:
    """Voxel count and volume in millilitres (mm^3 / 1000) of each non-zero label present."""
    voxel_ml = float(np.prod([float(step) for step in spacing[:3]])) / 1000.0
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return pd.DataFrame({
        "label": [int(value) for value in values],
        "name": [names.get(int(value), f"label {int(value)}") for value in values],
        "voxels": [int(count) for count in counts],
        "volume_ml": [round(int(count) * voxel_ml, 3) for count in counts],
    })


def label_names(values: Sequence[int], model_labels: Sequence[str] | None = None) -> dict[int, str]:
    """Names for label values: the seg model's labels (value ``i`` -> ``labels[i]``) when known."""
    names = {}
    for value in values:
        value = int(value)
        known = model_labels is not None and 0 <= value < len(model_labels)
        names[value] = model_labels[value] if known else f"label {value}"
    return names


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
