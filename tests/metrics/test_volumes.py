"""Label volumes in mL: one function for ``medres segment`` and the app, checked against nibabel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.imagestats import mask_volume

from medres.app.volume import label_volumes
from medres.io import read_image
from medres.metrics.volumes import label_volumes_ml, voxel_volume_ml


def labelled(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:5, 2:6, 1:3] = 1
    labels[-2:, -3:, -1:] = 2
    return labels


def test_matches_nibabel_mask_volume_on_anisotropic_and_oblique_grids(sample_data):
    oblique = read_image(sample_data / "volume_oblique.nii.gz").affine  # rotated: |det| = product of zooms
    anisotropic = np.diag([0.7, 0.8, 2.5, 1.0])
    for affine in (oblique, anisotropic):
        labels = labelled((10, 12, 8))
        for value in (1, 2):
            expected_ml = mask_volume(nib.Nifti1Image((labels == value).astype(np.uint8), affine)) / 1000.0
            assert label_volumes_ml(labels, affine, ["background", "a", "b"])["ab"[value - 1]] == \
                pytest.approx(expected_ml, abs=5e-4)


def test_a_sheared_grid_counts_its_parallelepiped_not_its_column_lengths():
    affine = np.eye(4)
    affine[:3, :3] = [[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]  # columns of length 2, sqrt(5), 3
    assert voxel_volume_ml(affine) == pytest.approx(2.0 * 2.0 * 3.0 / 1000.0)
    assert voxel_volume_ml(affine) < np.prod(np.linalg.norm(affine[:3, :3], axis=0)) / 1000.0


def test_segment_and_app_give_the_same_volumes(sample_data):
    image = read_image(sample_data / "ct_series")
    labels = labelled(image.spatial_shape)
    names = ["background", "liver", "spleen"]
    from_segment = label_volumes_ml(labels, image.affine, names)
    from_app = label_volumes(labels, image.affine, dict(enumerate(names)))
    assert dict(zip(from_app["name"], from_app["volume_ml"])) == from_segment
    assert list(from_app["voxels"]) == [int((labels == value).sum()) for value in (1, 2)]


def test_labels_absent_from_the_volume_are_listed_at_zero_by_segment_and_left_out_by_the_app():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0] = 2
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    assert label_volumes_ml(labels, affine, ["background", "a", "b"]) == {"a": 0.0, "b": 0.01}
    assert list(label_volumes(labels, affine, {2: "b"})["name"]) == ["b"]
