"""Where feature cells sit on the input, and sampling maps onto input and original grids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medres.explain.geometry import FeatureGrid, feature_grid, sample_maps
from medres.models import create_model


@pytest.mark.parametrize(("name", "stride", "offset"), [
    ("chexnet_resnet50", 32.0, 0.0), ("chexnet_tiny", 8.0, 0.0), ("chexnet_densenet121", 32.0, 14.0),
])
def test_measured_grid_matches_the_receptive_field_arithmetic(name: str, stride: float, offset: float) -> None:
    """ResNets centre layer4 cell k on pixel 32k (every stride-2 layer lands on even pixels), or 8k for
    chexnet_tiny, whose layer3 and layer4 keep stride 1; DenseNet's 2x2 average-pool transitions move it
    to 32k + 14."""
    model = create_model(name, input_size=(64, 64))
    grid = feature_grid(model, (64, 64))
    assert grid.stride == (stride, stride)
    assert grid.offset == pytest.approx((offset, offset), abs=0.1)


def test_a_cell_lands_on_its_centre_in_input_and_original_pixels() -> None:
    grid = FeatureGrid(stride=(32.0, 32.0), offset=(0.0, 0.0))
    one_cell = torch.zeros(4, 4)
    one_cell[1, 2] = 1.0
    on_input = sample_maps(one_cell, grid, (128, 128), (128, 128))
    assert divmod(int(on_input.argmax()), 128) == (32, 64)
    on_original = sample_maps(one_cell, grid, (128, 128), (256, 192))  # (r + 0.5) * 128 / 256 - 0.5 = 32
    peak_row, peak_col = divmod(int(on_original.argmax()), 192)
    assert peak_row in (64, 65) and peak_col == 96


def test_plain_grid_is_ordinary_bilinear_upsampling() -> None:
    maps = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    sampled = sample_maps(maps, FeatureGrid.plain((64, 80), (4, 5)), (64, 80), (64, 80))
    expected = F.interpolate(maps, size=(64, 80), mode="bilinear", align_corners=False)
    assert torch.allclose(sampled, expected, atol=1e-5)
