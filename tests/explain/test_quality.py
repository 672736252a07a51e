"""Localisation and faithfulness measures on hand-made maps and a toy model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medres.errors import UsageError
from medres.explain.quality import (
    box_mask,
    confidence_drop,
    intersection_over_box,
    pointing_game,
    random_regions,
    top_region,
)
from medres.models.card import ModelCard

BOX = (20.0, 10.0, 10.0, 8.0)  # x, y, w, h as in BBox_List_2017.csv


def map_with_peak(row: int, col: int, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    cam = np.zeros(shape)
    cam[row, col] = 1.0
    return cam


@pytest.mark.parametrize(("row", "col", "tolerance", "hit"), [
    (13, 25, 0, True),     # centre of the box
    (10, 20, 0, True),     # top-left corner pixel (centre 20.5, 10.5)
    (13, 35, 0, False),    # right of the box
    (13, 35, 6, True),     # ... within a 6-pixel tolerance
    (30, 5, 6, False),
])
def test_pointing_game(row: int, col: int, tolerance: float, hit: bool) -> None:
    assert pointing_game(map_with_peak(row, col), BOX, tolerance) is hit


def test_pointing_game_on_a_flat_map_is_a_miss() -> None:
    assert not pointing_game(np.zeros((40, 50)), BOX, tolerance=100)


def test_box_coordinates_are_x_then_y() -> None:
    mask = box_mask((40, 50), BOX)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 17, 20, 29)


def test_intersection_over_box() -> None:
    inside = np.where(box_mask((40, 50), BOX), 1.0, 0.0)
    assert intersection_over_box(inside, BOX, top_fraction=0.02) == pytest.approx(1.0)
    outside = 1.0 - inside
    assert intersection_over_box(outside, BOX, top_fraction=0.2) == 0.0
    assert intersection_over_box(np.zeros((40, 50)), BOX) == 0.0


def test_top_region_has_the_promised_size() -> None:
    values = np.random.default_rng(0).random((40, 50))
    assert top_region(values, 0.2).sum() == 400
    with pytest.raises(UsageError, match="fraction"):
        top_region(values, 0.0)


class LeftHalfModel(nn.Module):
    """Logit 0 = brightness of the left half: a model whose evidence we know."""

    card = ModelCard(name="left_half", task="cxr", labels=("left", "none"), in_channels=1, spatial_dims=2,
                     input_size=(32, 32))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        left = inputs[..., : inputs.shape[-1] // 2].mean(dim=(1, 2, 3))
        return torch.stack([left * 4, torch.zeros_like(left)], dim=1)


def test_masking_the_true_evidence_drops_confidence_more_than_a_random_region() -> None:
    inputs = torch.zeros(2, 1, 32, 32)
    inputs[..., :8, :16] = 3.0
    maps = torch.zeros(2, 1, 32, 32)
    maps[..., :8, :16] = 1.0  # a faithful map: exactly the bright evidence
    targets = torch.zeros(2, 1, dtype=torch.long)
    model = LeftHalfModel()
    faithful = confidence_drop(model, inputs, maps, targets, fraction=0.125)
    random = confidence_drop(model, inputs, maps, targets, regions=random_regions(maps.shape, 0.125))
    assert (faithful > 0.3).all()
    assert (faithful > random).all()
