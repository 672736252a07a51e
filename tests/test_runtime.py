"""medres.runtime: precision resolution and autocast, channels-last layouts, the torchrun context."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from medres.errors import UsageError
from medres.runtime import (
    DistributedContext,
    autocast_context,
    channels_last_format,
    is_main_process,
    model_to_channels_last,
    precision_name,
    resolve_device,
    resolve_precision,
    to_channels_last,
    unwrap,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision, dtype", [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_explicit_precisions_resolve_to_their_dtype(precision, dtype):
    assert resolve_precision(CPU, precision) is dtype


def test_auto_on_a_cpu_is_bf16_exactly_where_onednn_has_native_bf16():
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision(CPU, "auto") is (torch.bfloat16 if native else None)
    assert precision_name(CPU, "auto") == ("bfloat16" if native else "fp32")


def test_an_unknown_precision_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError, match="'int8' is not one of auto, fp32, bf16, fp16"):
        resolve_precision(CPU, "int8")


def test_autocast_context_runs_matmuls_in_the_resolved_dtype():
    left, right = torch.randn(4, 8), torch.randn(8, 2)
    assert isinstance(autocast_context(CPU, "fp32"), contextlib.nullcontext)
    with autocast_context(CPU, "bf16"):
        assert (left @ right).dtype == torch.bfloat16
    with autocast_context(CPU, "fp32"):
        assert (left @ right).dtype == torch.float32


def test_channels_last_layouts_follow_the_number_of_dimensions():
    assert channels_last_format(4) == torch.channels_last and channels_last_format(5) == torch.channels_last_3d
    assert to_channels_last(torch.randn(2, 3, 4, 5)).is_contiguous(memory_format=torch.channels_last)
    assert to_channels_last(torch.randn(2, 3, 4, 5, 6)).is_contiguous(memory_format=torch.channels_last_3d)
    flat = torch.randn(2, 3)
    assert to_channels_last(flat) is flat
    model = model_to_channels_last(nn.Sequential(nn.Conv3d(3, 4, 3), nn.InstanceNorm3d(4)))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_outside_torchrun_a_process_is_rank_0_of_1_and_writes(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = DistributedContext.from_environment()
    assert (context.rank, context.world_size, context.is_main) == (0, 1, True)
    assert context.device == resolve_device() and is_main_process()
    model = nn.Linear(2, 2)
    assert unwrap(context.prepare_model(model)) is model
    context.close()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


def test_resolve_device_takes_the_one_asked_for():
    assert resolve_device("cpu") == CPU and resolve_device(torch.device("meta")).type == "meta"
