"""Channels-last inference copies: same outputs as the model, layout kept end to end, the model untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medres.data.phantoms import PHANTOM_LABELS
from medres.models import create_model
from medres.segment.inference import sliding_window_logits
from medres.segment.layout import GROUP_NORM_MIN_CHANNELS, LayoutKeepingInstanceNorm, channels_last_copy

CHANNELS_LAST = torch.channels_last_3d


@pytest.mark.parametrize("channels", [1, 4, GROUP_NORM_MIN_CHANNELS, 32])
@pytest.mark.parametrize("affine", [False, True])
def test_layout_keeping_instance_norm_is_instance_norm_in_the_input_layout(channels, affine):
    norm = nn.InstanceNorm3d(channels, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
    batch = torch.randn(3, channels, 6, 5, 4) * 3 + 1
    keeping = LayoutKeepingInstanceNorm(norm)
    for layout in (torch.contiguous_format, CHANNELS_LAST):
        output = keeping(batch.contiguous(memory_format=layout))
        torch.testing.assert_close(output, norm(batch), rtol=1e-5, atol=1e-5)
        if channels > 1:  # one channel is both layouts at once
            assert output.is_contiguous(memory_format=layout)


def test_channels_last_copy_computes_the_same_logits_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = create_model("resunet3d_tiny", labels=PHANTOM_LABELS).eval()
    windows = torch.randn(2, 1, 48, 48, 32)
    twin = channels_last_copy(model)

    assert not any(isinstance(module, nn.InstanceNorm3d) for module in twin.modules())
    assert sum(isinstance(module, LayoutKeepingInstanceNorm) for module in twin.modules()) == sum(
        isinstance(module, nn.InstanceNorm3d) for module in model.modules()) > 0
    assert all(p.is_contiguous(memory_format=CHANNELS_LAST) for p in twin.parameters() if p.ndim == 5)
    assert all(p.is_contiguous() for p in model.parameters())
    assert twin.state_dict().keys() == model.state_dict().keys() and twin.card == model.card

    with torch.no_grad():
        expected = model(windows)
        output = twin(windows.contiguous(memory_format=CHANNELS_LAST))
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-4)
    assert output.is_contiguous(memory_format=CHANNELS_LAST)


def test_no_instance_norm_copies_a_window_batch_out_of_channels_last():
    """Every normalised activation stays channels-last, so no convolution or addition converts layouts."""
    twin = channels_last_copy(create_model("resunet3d_tiny", labels=PHANTOM_LABELS).eval())
    layouts = []
    for module in twin.modules():
        if isinstance(module, LayoutKeepingInstanceNorm):
            module.register_forward_hook(
                lambda module, args, output: layouts.append(output.is_contiguous(memory_format=CHANNELS_LAST)))
    with torch.no_grad():
        twin(torch.randn(2, 1, 48, 48, 32).contiguous(memory_format=CHANNELS_LAST))
    assert layouts and all(layouts)


def test_bf16_windows_run_on_a_copy_and_agree_with_fp32():
    torch.manual_seed(0)
    model = create_model("resunet3d_tiny", labels=PHANTOM_LABELS).eval()
    volume = torch.randn(1, 64, 64, 40)
    device = torch.device("cpu")
    fp32 = sliding_window_logits(model, volume, (48, 48, 32), device, 4, 0.5, "fp32")
    bf16 = sliding_window_logits(model, volume, (48, 48, 32), device, 4, 0.5, "bf16")
    assert all(p.is_contiguous() for p in model.parameters())  # the caller's model kept its layout
    assert any(isinstance(module, nn.InstanceNorm3d) for module in model.modules())
    scale = fp32.abs().max()
    assert (bf16 - fp32).abs().max() < 0.05 * scale
    assert F.cosine_similarity(bf16.flatten(), fp32.flatten(), dim=0) > 0.999
