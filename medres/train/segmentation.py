"""The 3D segmentation journey on the shared loop: fingerprint, cache, patches, Dice + CE, Dice validation.

``train_seg`` reads an MSD or nnU-Net folder, holds out a validation split,
computes the training cases' fingerprint (median spacing, CT foreground
percentiles), builds the model with a card that records them, preprocesses
every case once into a cache, and trains on random patches through
:func:`medres.train.loop.fit` (AMP, resume, torchrun and checkpoints come from
there). Validation runs the same sliding-window inference as ``medres
segment`` on the whole validation volumes at the card's spacing; the score
that selects ``best.safetensors`` is their mean Dice over labels and cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

from medres.data.volume_cache import DatasetFingerprint, PreprocessedCases, compute_fingerprint
from medres.data.volume_patches import SegmentationPatchDataset
from medres.data.volumes import VolumeCase, VolumeDataset, load_volume_dataset
from medres.errors import UsageError
from medres.inference import logits_to_labels, sliding_window_logits
from medres.metrics import dice
from medres.models import create_model, pretrained
from medres.runtime import is_main_process
from medres.train.loop import TrainConfig, fit, seed_everything


def default_seg_loop() -> TrainConfig:
    """nnU-Net-like defaults that suit the loop: batch 2, Adam 3e-4 with nnU-Net's poly decay, long patience.

    Poly rather than the plateau rule (still there: ``lr_schedule="plateau"``
    halves the rate after 5 stalled epochs): the rate reaches zero at the last
    epoch, so the final weights are annealed whatever the noise in the
    validation loss (on ``bench_segment``'s phantom recipe the plateau rule
    first lowered the rate after 26 to 70 of 80 epochs, depending on the run).
    There, overlapping windows agreed better with poly (the spleen Dice
    between Gaussian and constant blending, ``benchmarks/RESULTS.md``).

    Channels-last 3D layout: training steps of the 3D U-Nets run faster in it,
    in fp32 and in bf16.
    """
    return TrainConfig(epochs=50, batch_size=2, learning_rate=3e-4, weight_decay=3e-5, lr_schedule="poly",
                       plateau_factor=0.5, plateau_patience=5, early_stopping_patience=15, channels_last=True)


@dataclass
class SegTrainConfig:
    """Everything ``medres train seg`` needs; written to ``RUN_DIR/config.json``."""

    data: str
    out: str
    model: str = "resunet3d"
    patch_size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    patches_per_epoch: int = 250
    foreground_fraction: float = 1 / 3
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    cache: str | None = None
    overlap: float = 0.5
    sw_batch_size: int = 4
    init: str | None = None
    loop: TrainConfig = field(default_factory=default_seg_loop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> SegTrainConfig:
        values = json.loads(text)
        values["loop"] = TrainConfig(**{**values.get("loop", {}), "betas": tuple(values["loop"]["betas"])})
        return cls(**values)

    def cache_root(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.out) / "preprocessed"


def split_cases(cases: tuple[VolumeCase, ...], val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded case-level split (cases are patients in MSD/nnU-Net folders); at least one of each."""
    if len(cases) < 2:
        raise UsageError(f"need at least 2 labelled cases to hold one out for validation, got {len(cases)}")
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(max(1, round(val_fraction * len(cases))), len(cases) - 1)
    val = sorted(int(i) for i in order[:n_val])
    return [cases[i] for i in range(len(cases)) if i not in val], [cases[i] for i in val]


def build_seg_model(config: SegTrainConfig, dataset: VolumeDataset, fingerprint: DatasetFingerprint) -> nn.Module:
    """The registry model with a card recording labels, spacing, normalisation, patch and mirroring."""
    overrides = {"labels": dataset.labels, "in_channels": len(dataset.channel_names),
                 "spacing": tuple(config.spacing or fingerprint.median_spacing),
                 "normalization": fingerprint.normalization,
                 "training_data_fingerprint": fingerprint.files_hash, "mirror_axes": tuple(config.mirror_axes),
                 "extra": {"modality": dataset.modality, "channel_names": list(dataset.channel_names)}}
    if config.patch_size:
        overrides["input_size"] = tuple(config.patch_size)
    seed_everything(config.loop.seed, config.loop.deterministic)  # same initial weights for the same seed
    model = create_model(config.model, **overrides)
    if model.card.task != "seg":
        raise UsageError(f"model {config.model!r} is a {model.card.task!r} model; pick a seg model such as resunet3d")
    divisor = int(np.prod(getattr(model, "strides", (1,))))
    if any(size % divisor for size in model.card.input_size):
        raise UsageError(f"patch size {model.card.input_size} must be a multiple of {divisor} along every axis for "
                         f"{config.model} (its encoder halves the size {int(np.log2(divisor))} times)")
    if config.init:
        pretrained.initialise_weights(model, config.init, strict=True)
    return model


class SegmentationLoss(nn.Module):
    """MONAI's Dice + cross-entropy on softmax logits, computed in float32 under autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.dice_ce(logits.float(), targets)


def make_seg_validator(store: PreprocessedCases, case_ids: list[str], loss: nn.Module,
                       config: SegTrainConfig) -> Callable[[nn.Module], dict[str, float]]:
    """Validation: Dice+CE loss (drives a plateau schedule) and mean Dice over labels and cases (selects best)."""
    labels = store.card.labels

    def validate(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        losses, per_label = [], {name: [] for name in labels[1:]}
        for case_id in case_ids:
            volume = torch.from_numpy(np.array(store.image(case_id)))
            truth = torch.from_numpy(np.asarray(store.label(case_id)).astype(np.int64))
            logits = sliding_window_logits(model, volume, model.card.input_size, device, config.sw_batch_size,
                                           config.overlap, config.loop.precision)
            losses.append(float(loss(logits[None], truth[None, None].to(device))))
            prediction = logits_to_labels(logits).numpy()
            for value, name in enumerate(labels[1:], start=1):
                per_label[name].append(dice(prediction == value, truth.numpy() == value))
        model.train()
        means = {f"dice_{name}": float(np.mean(values)) for name, values in per_label.items()}
        return {"val_loss": float(np.mean(losses)), "score": float(np.mean(list(means.values()))), **means}
    return validate


def train_seg(config: SegTrainConfig, resume: bool = False) -> Path:
    """Train a segmentation model; returns the run folder (``best.safetensors`` inside)."""
    run_dir = Path(config.out)
    dataset = load_volume_dataset(config.data)
    train_cases, val_cases = split_cases(dataset.training, config.val_fraction, config.split_seed)
    show = config.loop.progress and is_main_process()
    fingerprint = compute_fingerprint(dataset, train_cases, config.cache_root(), progress=show)
    model = build_seg_model(config, dataset, fingerprint)
    store = PreprocessedCases(config.cache_root(), model.card, [*train_cases, *val_cases])
    store.ensure(len(dataset.labels), progress=show)
    patches = SegmentationPatchDataset(store, [case.case_id for case in train_cases], model.card.input_size,
                                       config.patches_per_epoch, config.foreground_fraction, model.card.mirror_axes,
                                       config.loop.seed)
    loss = SegmentationLoss()
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json())
        split = {"train": [case.case_id for case in train_cases], "val": [case.case_id for case in val_cases]}
        (run_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")
        (run_dir / "data_index.txt").write_text(dataset.summary() + "\n")
    validator = make_seg_validator(store, [case.case_id for case in val_cases], loss, config)
    fit(model, patches, validator, loss, config.loop, run_dir, resume=resume)
    return run_dir
