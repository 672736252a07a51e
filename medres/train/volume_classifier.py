"""Volume-level classification ("vol") on the shared loop: 3D ResNet, BCE, validation by AUROC.

Images come from an MSD / nnU-Net folder (``dataset.json``); targets from a
CSV next to them (``case``, then one 0/1 column per label). Volumes get the
same preprocessing as segmentation (median spacing, nnU-Net normalisation,
recorded in the card; cached once), then are padded or cropped to the card's
input size. Validation reuses the chest X-ray code: BCE loss and mean AUROC
from :func:`medres.metrics.per_label_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medres.data.volume_cache import DatasetFingerprint, PreprocessedCases, compute_fingerprint
from medres.data.volume_patches import VolumeClassificationDataset
from medres.data.volumes import VOLUME_LABELS_FILE, VolumeDataset, load_volume_dataset, read_volume_labels
from medres.errors import UsageError
from medres.inference import predict_dataset
from medres.metrics import per_label_metrics
from medres.models import create_model, pretrained
from medres.runtime import is_main_process
from medres.train.cxr import bce_loss
from medres.train.loop import TrainConfig, fit, seed_everything
from medres.train.segmentation import split_cases


def default_vol_loop() -> TrainConfig:
    """Adam 1e-3, batch 4, LR halved on a plateau, patience 15, channels-last 3D layout (faster steps)."""
    return TrainConfig(epochs=20, batch_size=4, learning_rate=1e-3, plateau_factor=0.5, plateau_patience=3,
                       early_stopping_patience=15, channels_last=True)


@dataclass
class VolTrainConfig:
    """Everything ``medres train vol`` needs; written to ``RUN_DIR/config.json``."""

    data: str
    out: str
    model: str = "resnet3d_18"
    labels: str | None = None
    input_size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    mirror_axes: tuple[int, ...] = ()
    cache: str | None = None
    init: str | None = None
    loop: TrainConfig = field(default_factory=default_vol_loop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> VolTrainConfig:
        values = json.loads(text)
        values["loop"] = TrainConfig(**{**values.get("loop", {}), "betas": tuple(values["loop"]["betas"])})
        return cls(**values)

    def labels_csv(self) -> Path:
        return Path(self.labels) if self.labels else Path(self.data) / VOLUME_LABELS_FILE

    def cache_root(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.out) / "preprocessed"


def build_vol_model(config: VolTrainConfig, dataset: VolumeDataset, label_names: tuple[str, ...],
                    fingerprint: DatasetFingerprint) -> nn.Module:
    """The registry classifier with a card recording the labels, spacing and normalisation."""
    overrides = {"labels": label_names, "in_channels": len(dataset.channel_names),
                 "spacing": tuple(config.spacing or fingerprint.median_spacing),
                 "normalization": fingerprint.normalization, "training_data_fingerprint": fingerprint.files_hash,
                 "mirror_axes": tuple(config.mirror_axes), "extra": {"modality": dataset.modality}}
    if config.input_size:
        overrides["input_size"] = tuple(config.input_size)
    seed_everything(config.loop.seed, config.loop.deterministic)  # same initial weights for the same seed
    model = create_model(config.model, **overrides)
    if model.card.task != "vol":
        raise UsageError(f"model {config.model!r} is a {model.card.task!r} model; pick a vol model such as resnet3d_18")
    if config.init:
        pretrained.initialise_weights(model, config.init, strict=False)
    return model


def train_vol(config: VolTrainConfig, resume: bool = False) -> Path:
    """Train a volume classifier; returns the run folder (``best.safetensors`` inside)."""
    run_dir = Path(config.out)
    dataset = load_volume_dataset(config.data)
    label_names, targets = read_volume_labels(config.labels_csv(), [case.case_id for case in dataset.training])
    train_cases, val_cases = split_cases(dataset.training, config.val_fraction, config.split_seed)
    show = config.loop.progress and is_main_process()
    fingerprint = compute_fingerprint(dataset, train_cases, config.cache_root(), progress=show)
    model = build_vol_model(config, dataset, label_names, fingerprint)
    store = PreprocessedCases(config.cache_root(), model.card, [*train_cases, *val_cases])
    store.ensure(len(dataset.labels), progress=show)
    input_size = model.card.input_size
    train = VolumeClassificationDataset(store, [case.case_id for case in train_cases], targets, input_size,
                                        model.card.mirror_axes, config.loop.seed)
    val = VolumeClassificationDataset(store, [case.case_id for case in val_cases], targets, input_size)
    loss = bce_loss(train.labels, class_weighted=False)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json())
        split = {"train": [case.case_id for case in train_cases], "val": [case.case_id for case in val_cases]}
        (run_dir / "split.json").write_text(json.dumps(split, indent=2) + "\n")
    validator = _volume_validator(val, config.loop, label_names)
    fit(model, train, validator, loss, config.loop, run_dir, resume=resume)
    return run_dir


def _volume_validator(val: VolumeClassificationDataset, loop: TrainConfig,
                      label_names: tuple[str, ...]) -> Callable[[nn.Module], dict[str, float]]:
    """Validation: BCE loss (drives the LR plateau) and mean AUROC (selects the best), as for chest X-rays."""
    def validate(model: nn.Module) -> dict[str, float]:
        probabilities, targets = predict_dataset(model, val, loop.batch_size, loop.workers, loop.precision)
        model.train()
        logits = torch.logit(torch.from_numpy(probabilities).clamp(1e-7, 1 - 1e-7))
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(targets)))
        with np.errstate(all="ignore"):
            metrics = per_label_metrics(targets, probabilities, list(label_names))
        row = {"val_loss": val_loss, "score": metrics["mean_auroc"], "val_mean_auroc": metrics["mean_auroc"]}
        row.update({f"auroc_{label}": values["auroc"] for label, values in metrics["per_label"].items()})
        return row
    return validate
