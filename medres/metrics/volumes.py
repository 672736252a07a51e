"""Label volumes in millilitres, from the voxel grid's affine: one definition for ``medres segment`` and the app.

A voxel's volume is the absolute determinant of the affine's 3x3 part (mm^3),
which is the product of the spacings for an axis-aligned or rotated grid and
stays right for a sheared one, where the product of the column lengths
overstates it. Volumes are rounded to 0.001 mL (one cubic millimetre).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

MM3_PER_ML = 1000.0
VOLUME_DECIMALS = 3  # 0.001 mL = 1 mm^3


def voxel_volume_ml(affine: ArrayLike) -> float:
    """The volume of one voxel in millilitres: ``|det(affine[:3, :3])| / 1000``.

    Args:
        affine: The 4x4 (or 3x3) map from voxel index to millimetres.
    """
    return abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / MM3_PER_ML


def volume_ml(voxel_count: int, affine: ArrayLike) -> float:
    """``voxel_count`` voxels of the grid ``affine`` in millilitres, rounded to 0.001 mL."""
    return round(int(voxel_count) * voxel_volume_ml(affine), VOLUME_DECIMALS)


def label_volumes_ml(labels: np.ndarray, affine: ArrayLike, label_names: Sequence[str]) -> dict[str, float]:
    """The volume of every non-background label in millilitres, by name (0.0 for a label not present).

    Args:
        labels: Integer labels (value ``i`` is ``label_names[i]``, 0 the background).
        affine: Their grid's voxel-to-millimetre affine.
        label_names: The name of each value, background first.
    """
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(label_names))
    return {name: volume_ml(counts[value], affine) for value, name in enumerate(label_names) if value > 0}
