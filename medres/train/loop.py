"""One training loop for every task: plain functions, a config dataclass, no trainer classes.

``fit`` runs epochs of ``train_one_epoch``, validates with a task-supplied
function, keeps the best model by the task's score, schedules the learning
rate (lowered when the validation loss plateaus, or nnU-Net's poly decay),
stops early, and after every epoch writes
``last.safetensors`` / ``best.safetensors`` (model checkpoints with their card),
``metrics.csv`` and a resumable ``state.safetensors`` — all atomically, on rank
0 only. A run killed at any moment resumes from its last saved state
(``checkpoint_every_steps`` adds mid-epoch saves) with the same sample order,
augmentation, learning rate and step count as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from medres.atomic import atomic_output
from medres.errors import NonFiniteLossError, UsageError
from medres.models.checkpoint import save_checkpoint
from medres.runtime import DistributedContext, autocast_context, resolve_precision, to_channels_last, unwrap
from medres.train.state import load_training_state, save_training_state

STATE_FILE, LAST_FILE, BEST_FILE = "state.safetensors", "last.safetensors", "best.safetensors"
METRICS_FILE = "metrics.csv"


@dataclass
class TrainConfig:
    """Hyper-parameters of the shared loop (defaults: the CheXNet recipe)."""

    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: str = "plateau"  # plateau: lowered when the validation loss stalls | poly: nnU-Net's decay to 0
    plateau_factor: float = 0.1
    plateau_patience: int = 1
    early_stopping_patience: int = 3
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto
    channels_last: bool = False
    grad_accumulation: int = 1
    workers: int = 0
    seed: int = 0
    deterministic: bool = False
    checkpoint_every_steps: int = 0
    progress: bool = True


@dataclass
class Progress:
    """Where training stands; saved in the resumable state."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, sharded by rank, that can start mid-epoch."""

    def __init__(self, n_items: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n_items, self.seed, self.shuffle = n_items, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_item: int) -> None:
        self.epoch, self.start = epoch, start_item

    def shard(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n_items, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n_items)
        per_rank = math.ceil(self.n_items / self.world_size)
        padded = torch.cat([order, order[: per_rank * self.world_size - self.n_items]])
        return padded[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start :])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n_items / self.world_size) - self.start)


def train_one_epoch(model: nn.Module, loader: DataLoader, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    config: TrainConfig, progress: Progress, context: DistributedContext,
                    on_step: Callable[[], None] | None = None, scaler: Any = None) -> float:
    """One pass over the loader; returns the mean training loss of this (possibly resumed) epoch."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {progress.epoch + 1}/{config.epochs}", unit="batch",
               disable=not (config.progress and context.is_main), initial=progress.batch_in_epoch,
               total=progress.batch_in_epoch + len(loader))
    for inputs, targets in bar:
        inputs, targets = _to_device(inputs, context.device, config.channels_last), targets.to(context.device)
        with autocast_context(context.device, config.precision):
            loss = loss_fn(model(inputs), targets)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss {loss.item()} at epoch {progress.epoch + 1}, step {progress.global_step}")
        _backward(loss / config.grad_accumulation, scaler)
        progress.batch_in_epoch += 1
        progress.global_step += 1
        if progress.batch_in_epoch % config.grad_accumulation == 0 or progress.batch_in_epoch == bar.total:
            _optimizer_step(optimizer, scaler)
            if on_step is not None:
                on_step()
        total, count = total + loss.item(), count + 1
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(count, 1)


def _backward(loss: torch.Tensor, scaler: Any) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: Any) -> None:
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _to_device(inputs: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    inputs = inputs.to(device, non_blocking=True)
    return to_channels_last(inputs) if channels_last else inputs


def fit(model: nn.Module, train_dataset: Any, validate: Callable[[nn.Module], dict[str, float]],
        loss_fn: Callable, config: TrainConfig, run_dir: Path, resume: bool = False) -> Progress:
    """Train ``model`` on ``train_dataset``, keeping the best by ``validate(model)["score"]``.

    Args:
        model: The network, with its card as ``model.card``.
        train_dataset: Yields (inputs, targets); ``set_epoch(epoch)`` is called if present.
        validate: Returns at least ``val_loss`` and ``score`` (higher is better) for the model.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        config: Hyper-parameters.
        run_dir: Where checkpoints, metrics and the resumable state go.
        resume: Continue from ``run_dir/state.safetensors`` when it exists.
    """
    context = DistributedContext.from_environment()
    seed_everything(config.seed, config.deterministic)
    model = context.prepare_model(model, config.channels_last)
    if isinstance(loss_fn, nn.Module):
        loss_fn = loss_fn.to(context.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, betas=tuple(config.betas),
                                 weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config)
    fp16 = resolve_precision(context.device, config.precision) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    progress = Progress()
    state_path = run_dir / STATE_FILE
    if resume and state_path.is_file():
        progress = Progress(**load_training_state(state_path, model, optimizer, scheduler, scaler))
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=2))
    sampler = EpochSampler(len(train_dataset), config.seed, True, context.rank, context.world_size)
    save_state = lambda: _save_state(state_path, model, optimizer, scheduler, scaler, progress, context)  # noqa: E731
    try:
        while not progress.finished and progress.epoch < config.epochs:
            _run_epoch(model, train_dataset, sampler, validate, loss_fn, optimizer, scheduler, scaler,
                       config, progress, context, run_dir, save_state)
    finally:
        context.close()
    return progress


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """The learning-rate schedule, stepped once per epoch.

    ``plateau`` multiplies the rate by ``plateau_factor`` when the validation
    loss has not improved for ``plateau_patience`` epochs; ``poly`` is
    nnU-Net's ``lr * (1 - epoch / epochs) ** 0.9``, which ends near zero so the
    last weights are annealed rather than caught mid-step.
    """
    if config.lr_schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=config.epochs, power=0.9)
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.plateau_factor,
                                                          patience=config.plateau_patience)
    raise UsageError(f"unknown lr_schedule {config.lr_schedule!r} (plateau or poly)")


def step_scheduler(scheduler: Any, val_loss: float) -> None:
    """End-of-epoch step: the plateau rule reads the validation loss, a fixed curve does not."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def _run_epoch(model, train_dataset, sampler, validate, loss_fn, optimizer, scheduler, scaler, config,
               progress, context, run_dir, save_state) -> None:
    started = time.perf_counter()
    if hasattr(train_dataset, "set_epoch"):
        train_dataset.set_epoch(progress.epoch)
    sampler.set_position(progress.epoch, progress.batch_in_epoch * config.batch_size)
    loader = DataLoader(train_dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                        persistent_workers=False, pin_memory=context.device.type == "cuda")

    def on_step() -> None:
        every = config.checkpoint_every_steps
        if every and progress.global_step % every == 0:
            save_state()

    train_loss = train_one_epoch(model, loader, loss_fn, optimizer, config, progress, context, on_step, scaler)
    results = validate(unwrap(model))
    _record_epoch(unwrap(model), results, train_loss, optimizer, config, progress, context, run_dir, started)
    step_scheduler(scheduler, results["val_loss"])
    progress.epoch += 1
    progress.batch_in_epoch = 0
    save_state()


def _record_epoch(model, results, train_loss, optimizer, config, progress, context, run_dir, started) -> None:
    score = float(results["score"])
    improved = math.isfinite(score) and score > progress.best_score
    if improved:
        progress.best_score, progress.best_epoch, progress.epochs_without_improvement = score, progress.epoch, 0
    else:
        progress.epochs_without_improvement += 1
    if progress.epochs_without_improvement >= config.early_stopping_patience:
        progress.finished = True
    row = {"epoch": progress.epoch + 1, "global_step": progress.global_step, "lr": optimizer.param_groups[0]["lr"],
           "train_loss": train_loss, **results, "seconds": round(time.perf_counter() - started, 2)}
    progress.history.append(row)
    if not context.is_main:
        return
    metadata = {"epoch": str(progress.epoch + 1), "global_step": str(progress.global_step), "score": str(score)}
    save_checkpoint(model, run_dir / LAST_FILE, extra_metadata=metadata)
    if improved:
        save_checkpoint(model, run_dir / BEST_FILE, extra_metadata=metadata)
    write_metrics_csv(run_dir / METRICS_FILE, progress.history)


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the per-epoch table from the saved history (atomic; no duplicate rows on resume)."""
    columns = list(dict.fromkeys(key for row in history for key in row))
    with atomic_output(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _save_state(path, model, optimizer, scheduler, scaler, progress, context) -> None:
    if context.is_main:
        save_training_state(path, model, optimizer, asdict(progress), scheduler, scaler)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (model initialisation included when called before it)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
