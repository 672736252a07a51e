"""Resumable training state in one safetensors file: no pickle, one atomic write.

Model weights, optimizer tensors and the torch RNG state are tensors; the
step counters, optimizer hyper-parameters, scheduler and gradient-scaler
state and the Python/NumPy RNG states go into the JSON metadata. Everything
is written together, so a run killed at any moment finds either the previous
complete state or the new one, never a mix.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from medres.errors import CorruptError
from medres.models.checkpoint import write_safetensors_atomically
from medres.runtime import unwrap

STATE_FORMAT = "medres-training-state-v1"


def save_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        progress: dict[str, Any], scheduler: Any = None, scaler: Any = None) -> None:
    """Write everything needed to continue training exactly where it stopped."""
    tensors = {f"model.{name}": value for name, value in unwrap(model).state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for parameter_id, slots in optimizer_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optimizer.{parameter_id}.{slot}"] = torch.as_tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    numpy_state = np.random.get_state()
    metadata = {
        "format": STATE_FORMAT,
        "progress": json.dumps(progress),
        "optimizer_param_groups": json.dumps(optimizer_state["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else None),
        "rng_python": json.dumps(random.getstate()),
        "rng_numpy": json.dumps([numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]),
    }
    write_safetensors_atomically(path, tensors, metadata)


def load_training_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any = None, scaler: Any = None) -> dict[str, Any]:
    """Restore model, optimizer, scheduler, scaler and RNGs; returns the saved progress."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptError(f"training state cannot be read ({error}); delete it to restart", path=path) from error
    if metadata.get("format") != STATE_FORMAT:
        raise CorruptError("not a medres training state", path=path)
    unwrap(model).load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_optimizer_state(tensors, json.loads(metadata["optimizer_param_groups"])))
    for target, key in ((scheduler, "scheduler"), (scaler, "scaler")):
        saved = json.loads(metadata[key])
        if target is not None and saved is not None:
            target.load_state_dict(saved)
    _restore_rng(tensors["rng.torch"], metadata)
    return json.loads(metadata["progress"])


def _optimizer_state(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, parameter_id, slot = key.split(".", 2)
            state.setdefault(int(parameter_id), {})[slot] = value
    return {"state": state, "param_groups": param_groups}


def _restore_rng(torch_state: torch.Tensor, metadata: dict[str, str]) -> None:
    torch.set_rng_state(torch_state)
    version, internal, gauss = json.loads(metadata["rng_python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = json.loads(metadata["rng_numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))

