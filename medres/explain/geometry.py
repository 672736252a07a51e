"""Where each cell of a feature map sits on the input image, and sampling maps onto pixel grids.

Upsampling a ``h x w`` class activation map with ``interpolate(...,
align_corners=False)`` assumes cell ``k`` is centred on input pixel
``stride * k + (stride - 1) / 2``. That holds for some networks, not all: in a
torchvision-style ResNet every stride-2 layer (7x7 padding 3, 3x3 padding 1,
max-pool 3 padding 1) centres its output on an *even* input pixel, so layer4
cell ``k`` is centred on pixel ``32 k`` -- 15.5 pixels up and left of where
plain upsampling puts it (half a cell). DenseNet's 2x2 average-pool
transitions shift it back to ``32 k + 14``. At 224 pixels this misplaces a map
by 7 % of the image; at 128 pixels (a 4 x 4 map) by 12 %.

:func:`feature_grid` measures the grid of any model instead of assuming it:
on a copy whose convolutions are uniform averages, batch norms identities and
max-pools average-pools (so the network is linear with a symmetric kernel per
layer), the input-gradient of a central cell has its centre of mass exactly
at that cell's receptive-field centre. The result depends only on the
architecture and input size, so it is computed once per model name and cached.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

PROBE_MIN_SIZE, PROBE_MULTIPLE = 256, 64


@dataclass(frozen=True)
class FeatureGrid:
    """Affine map from feature-cell index to input pixel centre: ``pixel = offset + stride * index``.

    Attributes:
        stride: Input pixels per feature cell, (rows, columns).
        offset: Input pixel (centre convention, 0-based) of cell ``(0, 0)``, (rows, columns).
    """

    stride: tuple[float, float]
    offset: tuple[float, float]

    @classmethod
    def plain(cls, input_size: tuple[int, int], feature_size: tuple[int, int]) -> FeatureGrid:
        """The grid plain ``align_corners=False`` upsampling assumes."""
        stride = tuple(float(size) / float(cells) for size, cells in zip(input_size, feature_size))
        return cls(stride, tuple((step - 1) / 2 for step in stride))


def feature_grid(model: nn.Module, input_size: tuple[int, int]) -> FeatureGrid:
    """The measured grid of ``model.card.gradcam_layer`` for inputs of ``input_size`` (cached per architecture)."""
    card = model.card
    key = (card.name, card.gradcam_layer, card.in_channels, tuple(int(size) for size in input_size))
    if key not in _GRID_CACHE:
        _GRID_CACHE[key] = _measure_grid(model, key[3])
    return _GRID_CACHE[key]


_GRID_CACHE: dict[tuple, FeatureGrid] = {}


def sample_maps(feature_maps: torch.Tensor, grid: FeatureGrid, input_size: tuple[int, int],
                output_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of ``(..., h, w)`` maps on an ``output_size`` pixel grid covering the input's field of view.

    Output pixel ``r`` (of ``rows``) covers input position ``(r + 0.5) * H / rows - 0.5``
    (a full-field resize with half-pixel centres, as preprocessing does); that
    position is looked up on the feature grid. Positions beyond the outermost
    cells take the edge cell's value.
    """
    leading = feature_maps.shape[:-2]
    height, width = feature_maps.shape[-2:]
    flat = feature_maps.reshape(-1, 1, height, width).float()
    rows = _cell_coordinates(output_size[0], input_size[0], grid.stride[0], grid.offset[0], height)
    cols = _cell_coordinates(output_size[1], input_size[1], grid.stride[1], grid.offset[1], width)
    sampling = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)[None].to(flat.device)
    sampling = sampling.expand(flat.shape[0], -1, -1, -1)
    sampled = F.grid_sample(flat, sampling, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.reshape(*leading, *output_size)


def _cell_coordinates(n_out: int, n_input: int, stride: float, offset: float, n_cells: int) -> torch.Tensor:
    """Normalised (-1..1, ``align_corners=True``) feature coordinates of ``n_out`` output pixel centres."""
    pixels = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_input / n_out) - 0.5
    cells = (pixels - offset) / stride
    normalised = cells * 2 / max(n_cells - 1, 1) - 1 if n_cells > 1 else torch.zeros_like(cells)
    return normalised.float()


def _measure_grid(model: nn.Module, input_size: tuple[int, int]) -> FeatureGrid:
    """Centre of mass of a central cell's input gradient on a linearised copy, on a larger probe image.

    The probe is at least twice the input size so the central cell's receptive
    field is barely clipped by the border (clipping would pull its centre inwards).
    """
    probe = _linearised_copy(model)
    probe_size = tuple(-(-max(PROBE_MIN_SIZE, 2 * size) // PROBE_MULTIPLE) * PROBE_MULTIPLE for size in input_size)
    captured: list[torch.Tensor] = []
    handle = probe.get_submodule(model.card.gradcam_layer).register_forward_hook(
        lambda _module, _inputs, output: captured.append(output))
    device = next(probe.parameters()).device
    inputs = torch.ones(1, model.card.in_channels, *probe_size, device=device, requires_grad=True)
    with torch.enable_grad():
        probe(inputs)
        handle.remove()
        activation = captured[-1]
        cell = (activation.shape[-2] // 2, activation.shape[-1] // 2)
        gradient, = torch.autograd.grad(activation[0, :, cell[0], cell[1]].sum(), inputs)
    weights = gradient[0].sum(0).double().cpu().clamp_min(0)
    total = weights.sum()
    centres = [float((weights.sum(dim=1 - axis) * torch.arange(probe_size[axis], dtype=torch.float64)).sum() / total)
               for axis in (0, 1)]
    stride = tuple(probe_size[axis] / activation.shape[-2 + axis] for axis in (0, 1))
    offset = tuple(centres[axis] - stride[axis] * cell[axis] for axis in (0, 1))
    return FeatureGrid(stride, offset)


@functools.singledispatch
def _linear_replacement(module: nn.Module) -> nn.Module | None:
    return None


@_linear_replacement.register
def _(module: nn.MaxPool2d) -> nn.Module:
    return nn.AvgPool2d(module.kernel_size, module.stride, module.padding, ceil_mode=module.ceil_mode,
                        count_include_pad=False)


def _linearised_copy(model: nn.Module) -> nn.Module:
    """A copy with uniform conv kernels, identity batch norms and average pools, in eval mode.

    Every remaining operation is linear with a kernel symmetric about its centre
    (ReLUs see only positive values), so gradients keep receptive-field centres.
    """
    probe = copy.deepcopy(model).eval()
    for parent in probe.modules():
        for name, child in list(parent.named_children()):
            replacement = _linear_replacement(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()
                module.reset_running_stats()
    return probe
