"""The one in-memory image type every reader returns and every consumer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nibabel.nifti1 import Nifti1Header
    from pydicom.dataset import Dataset


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
        sources: The headers the image was read from, kept so that a writer can
            write for this image without opening its source again (nnU-Net's
            reader/writer pair sharing one properties dict): for a DICOM series
            folder, every slice's dataset with its pixel data dropped, in
            file-name order (a DICOM SEG references them); for a NIfTI file, its
            nibabel header (the labels go back in its voxel order under its
            qform/sform); empty for single DICOM files and PNG/JPEG. The DICOM
            headers hold patient-identifying values, which is why they live here
            and not in ``meta``: only the DICOM SEG writer, whose output belongs
            to the same patient and study, reads them. Left out of ``==`` and
            ``repr``.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    modality: str = "OT"
    sources: tuple[Dataset | Nifti1Header, ...] = field(default=(), compare=False, repr=False)

    @property
    def is_volume(self) -> bool:
        """True for 3D images ``(C, X, Y, Z)``, False for 2D ``(C, rows, cols)``."""
        return self.array.ndim == 4

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The array's shape without the channel axis."""
        return tuple(self.array.shape[1:])
