"""The one in-memory image type every reader returns and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Image:
    """A decoded image with its physical geometry and PHI-free metadata.

    Attributes:
        array: float32, channel-first. A 2D image is ``(1, rows, cols)`` in
            display orientation with MONOCHROME2 polarity (higher is brighter).
            A volume is ``(C, X, Y, Z)`` in RAS+ voxel order, identical to what
            ``nibabel.as_closest_canonical`` gives.
        spacing: Millimetres per spatial axis, in the array's axis order.
        affine: 4x4 map from voxel index (spatial axes of ``array``, then 1)
            to RAS+ millimetres. For a 2D image the third index is 0.
        meta: Technical metadata only (modality, photometric interpretation,
            UIDs for grouping, ...); never patient-identifying values.
        modality: DICOM modality code ("CR", "CT", ...), "OT" when unknown.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    modality: str = "OT"

    @property
    def is_volume(self) -> bool:
        """True for 3D images ``(C, X, Y, Z)``, False for 2D ``(C, rows, cols)``."""
        return self.array.ndim == 4

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The array's shape without the channel axis."""
        return tuple(self.array.shape[1:])
