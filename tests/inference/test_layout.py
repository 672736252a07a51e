"""Channels-last 3D layout: inference copies (same outputs, layout kept end to end, model untouched) and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medres.inference import sliding_window_logits
from medres.inference.layout import GROUP_NORM_MIN_CHANNELS, LayoutKeepingInstanceNorm, channels_last_copy
from medres.models import create_model, load_checkpoint
from medres.synthetic.phantoms import PHANTOM_LABELS
from medres.train.loop import fit
from medres.train.segmentation import default_seg_loop
from medres.train.volume_classifier import default_vol_loop

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


def test_3d_training_runs_channels_last_and_saves_plain_weights(tmp_path):
    """The seg and vol loops default to channels-last; weights and batches are in that layout, checkpoints load."""
    model = create_model("resunet3d_tiny", labels=PHANTOM_LABELS)
    layouts = []
    model.register_forward_pre_hook(lambda module, args: layouts.append(
        (args[0].is_contiguous(memory_format=CHANNELS_LAST),
         module.model[0].conv.unit0.conv.weight.is_contiguous(memory_format=CHANNELS_LAST))))
    data = [(torch.randn(1, 48, 48, 32), torch.randint(0, 4, (1, 48, 48, 32))) for _ in range(4)]
    loss = lambda logits, targets: F.cross_entropy(logits, targets[:, 0])  # noqa: E731
    config = default_seg_loop()
    config.epochs, config.progress = 1, False
    assert config.channels_last and default_vol_loop().channels_last
    fit(model, data, lambda net: {"val_loss": 0.0, "score": 1.0}, loss, config, tmp_path)
    assert layouts == [(True, True)] * 2
    torch.testing.assert_close(load_checkpoint(tmp_path / "best.safetensors").state_dict(), model.state_dict())
