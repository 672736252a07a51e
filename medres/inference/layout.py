"""Channels-last copies of 3D networks, for reduced-precision window inference.

oneDNN's and cuDNN's bf16/fp16 3D convolutions are fastest on channels-last
tensors, but PyTorch's ``InstanceNorm3d`` normalises a channels-last input by
copying it to the default layout and returns that copy: the next convolution
copies it back, and a residual addition of the two layouts takes a slow
strided path. :func:`channels_last_copy` swaps each instance norm for
:class:`LayoutKeepingInstanceNorm` (the same arithmetic, returned in the
layout it was given), so a channels-last network stays channels-last from end
to end, with no layout conversion between layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

GROUP_NORM_MIN_CHANNELS = 8
"""From this many channels on, instance norm runs as channels-last group norm (one group per channel)."""


class LayoutKeepingInstanceNorm(nn.Module):
    """Instance normalisation of a batch (per sample and channel, no running statistics) in the input's layout.

    With :data:`GROUP_NORM_MIN_CHANNELS` channels or more it is ``group_norm``
    with one group per channel, which is the same arithmetic and runs natively
    on channels-last tensors. With fewer (a U-Net's full-resolution output
    block has one channel per label) PyTorch's channels-last group norm is
    slower than a copy, so it normalises a default-layout copy and converts
    the result back.
    """

    def __init__(self, norm: nn.InstanceNorm3d):
        super().__init__()
        self.eps = norm.eps
        self.weight, self.bias = norm.weight, norm.bias  # None unless the norm is affine

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        channels = batch.shape[1]
        if channels >= GROUP_NORM_MIN_CHANNELS:
            return F.group_norm(batch, channels, self.weight, self.bias, self.eps)
        layout = (torch.channels_last_3d if batch.is_contiguous(memory_format=torch.channels_last_3d)
                  else torch.contiguous_format)
        normalised = F.instance_norm(batch.contiguous(), weight=self.weight, bias=self.bias, eps=self.eps)
        return normalised.contiguous(memory_format=layout)


def channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in the channels-last 3D layout whose instance norms keep that layout.

    The outputs equal the model's (up to floating-point rounding); ``model``
    itself is not changed, so a model still being trained keeps its layout.
    """
    twin = copy.deepcopy(model)
    _swap_instance_norms(twin)
    return twin.to(memory_format=torch.channels_last_3d)


def _swap_instance_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.InstanceNorm3d) and not child.track_running_stats:
            setattr(module, name, LayoutKeepingInstanceNorm(child))
        else:
            _swap_instance_norms(child)
