"""Where and how models run: device, precision, autocast, channels-last layout, process groups.

Training, inference, scoring, segmentation and the app all take these
decisions here, so ``--precision auto`` or a torchrun launch means the same
thing whichever command runs the model, and nothing that serves inference
has to import the training package.

Precision: ``fp32`` runs as it is; ``bf16`` / ``fp16`` run under
``torch.autocast``; ``auto`` picks bf16 on CPUs with native bf16 (oneDNN) and
on CUDA devices that support it (else fp16 there), fp32 on other CPUs.

Processes: started plainly, a command is one process (rank 0 of 1). Started by
``torchrun --nproc_per_node N -m medres ...``, each process joins the group
(gloo on CPU, nccl on CUDA) and works on its share; only rank 0 writes the
shared files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from medres.errors import UsageError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
"""The precision choices every command accepts."""

_REDUCED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device a model runs on: the one asked for, else CUDA when available, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``; ``None`` means plain fp32.

    Raises:
        UsageError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    if precision not in _REDUCED_DTYPES:
        raise UsageError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return _REDUCED_DTYPES[precision]


def precision_name(device: torch.device, precision: str) -> str:
    """What ``precision`` resolves to on ``device``, as recorded in reports: ``fp32``, ``bfloat16`` or ``float16``."""
    dtype = resolve_precision(device, precision)
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: autocast in the resolved dtype, or a no-op for fp32."""
    dtype = resolve_precision(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last layout of a ``ndim``-dimensional batch or weight: 4 for images, 5 for volumes."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def to_channels_last(batch: torch.Tensor) -> torch.Tensor:
    """An image or volume batch in the channels-last layout oneDNN's and cuDNN's fast kernels prefer.

    Tensors that are not 4D or 5D batches are returned as they are.
    """
    if batch.ndim not in (4, 5):
        return batch
    return batch.contiguous(memory_format=channels_last_format(batch.ndim))


def model_to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` (in place) with its convolution weights in the channels-last layout of their dimension."""
    weight_ndim = max(parameter.ndim for parameter in model.parameters())
    return model.to(memory_format=channels_last_format(weight_ndim))


@dataclass
class DistributedContext:
    """This process's place in a torchrun group (rank 0 of 1 outside torchrun) and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, timeout: datetime.timedelta | None = None) -> DistributedContext:
        """Read torchrun's variables, pick this process's device and join the group if there is one.

        Args:
            timeout: How long collective operations (barriers) wait for the
                other ranks; torch's default when ``None``.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world_size > 1 and not dist.is_initialized():
            options = {} if timeout is None else {"timeout": timeout}
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **options)
        return cls(rank, world_size, local_rank, device)

    def prepare_model(self, model: nn.Module, channels_last: bool = False) -> nn.Module:
        """The model on this process's device, channels-last if asked, wrapped in DDP in a group."""
        model = model.to(self.device)
        if channels_last:
            model = model_to_channels_last(model)
        if self.world_size > 1:
            device_ids = [self.local_rank] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        return model

    def close(self) -> None:
        """Wait for every rank, then leave the group (nothing to do outside torchrun)."""
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0: the one process that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (the one whose state and card are saved)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
