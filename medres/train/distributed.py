"""torchrun / DistributedDataParallel glue: which rank, which device, who writes.

Started plainly, training is one process (rank 0 of 1). Started by
``torchrun --nproc_per_node N -m medres train ...``, each process joins the
group (gloo on CPU, nccl on CUDA), wraps the model in DDP and trains on its
shard of every epoch; only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank, world_size, local_rank, device)

    def prepare_model(self, model: nn.Module, channels_last: bool = False) -> nn.Module:
        model = model.to(self.device)
        if channels_last:
            weight_ndim = max(parameter.ndim for parameter in model.parameters())
            model = model.to(memory_format=channels_last_format(weight_ndim))
        if self.world_size > 1:
            device_ids = [self.local_rank] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        return model

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last layout of a ``ndim``-dimensional batch or weight: 4 for images, 5 for volumes."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0: the one process that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (the one whose state and card are saved)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
