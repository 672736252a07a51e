"""The chest X-ray journey on the shared loop: data, model, loss, validation by AUROC."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medres.data.chestxray14 import LABELS, ChestXray14Index, load_chestxray14
from medres.data.cxr_dataset import CxrDataset, StoredImageCache, table_fingerprint
from medres.errors import UsageError
from medres.inference import predict_dataset
from medres.metrics import per_label_metrics
from medres.models import create_model, pretrained
from medres.models.card import DEFAULT_STORED_SIZE
from medres.runtime import is_main_process
from medres.train.loop import TrainConfig, fit, seed_everything
from medres.transforms.cxr import Augmentation, CxrInputTransform

LOGGER = logging.getLogger(__name__)


@dataclass
class CxrTrainConfig:
    """Everything ``medres train cxr`` needs; written to ``RUN_DIR/config.json``."""

    data: str
    out: str
    model: str = "chexnet_resnet50"
    cache: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    augment: bool = True
    class_weighted: bool = False
    init: str | None = None
    input_size: int | None = None
    loop: TrainConfig = field(default_factory=TrainConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CxrTrainConfig:
        values = json.loads(text)
        values["loop"] = TrainConfig(**{**values.get("loop", {}), "betas": tuple(values["loop"]["betas"])})
        return cls(**values)


def build_model(config: CxrTrainConfig, index: ChestXray14Index, stored_size: int) -> nn.Module:
    """The registry model with a card that records the data and preprocessing it is trained with.

    Args:
        stored_size: The size images are stored at during training (the prepared cache's, else
            :data:`DEFAULT_STORED_SIZE`); the card records it, and the datasets read it from there.
    """
    overrides = {"training_data_fingerprint": table_fingerprint(index.table), "stored_size": stored_size,
                 "extra": {"split_method": index.split_method}}
    if config.input_size:
        overrides["input_size"] = (config.input_size, config.input_size)
    seed_everything(config.loop.seed, config.loop.deterministic)  # same initial weights for the same seed
    model = create_model(config.model, **overrides)
    if config.init:
        pretrained.initialise_weights(model, config.init, strict=True)
    return model


def make_datasets(config: CxrTrainConfig, index: ChestXray14Index, card,
                  cache: StoredImageCache | None) -> tuple[CxrDataset, CxrDataset]:
    """Train and val datasets that store images as ``card`` says (its ``stored_size`` and ``crop``)."""
    table = index.table
    if cache is not None and cache.failed:
        LOGGER.warning("%d images could not be decoded when the cache was prepared; they are left out",
                       len(cache.failed))
        table = table[table["image"].isin(cache.row_of)]
    augmentation = Augmentation() if config.augment else None
    train = CxrDataset(table[table["split"] == "train"], CxrInputTransform(card, augmentation, config.loop.seed),
                       cache)
    val = CxrDataset(table[table["split"] == "val"], CxrInputTransform(card), cache)
    if len(train) == 0 or len(val) == 0:
        raise UsageError(f"need images in both train and val splits, got {len(train)} and {len(val)}",
                         path=config.data)
    return train, val


def bce_loss(labels: torch.Tensor, class_weighted: bool) -> nn.Module:
    """Binary cross-entropy on logits; class-weighted by negatives/positives per label if asked."""
    if not class_weighted:
        return nn.BCEWithLogitsLoss()
    positives = labels.sum(0).clamp(min=1)
    return nn.BCEWithLogitsLoss(pos_weight=(len(labels) - positives) / positives)


def make_validator(val: CxrDataset, loss: nn.Module, config: TrainConfig):
    """Validation: BCE loss (drives the LR plateau) and mean AUROC (selects the best model)."""
    def validate(model: nn.Module) -> dict[str, float]:
        probabilities, targets = predict_dataset(model, val, max(config.batch_size, 32), config.workers,
                                                 config.precision)
        logits = torch.logit(torch.from_numpy(probabilities).clamp(1e-7, 1 - 1e-7))
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(targets), pos_weight=getattr(loss, "pos_weight", None)))
        with np.errstate(all="ignore"):
            metrics = per_label_metrics(targets, probabilities, list(LABELS))
        row = {"val_loss": val_loss, "score": metrics["mean_auroc"], "val_mean_auroc": metrics["mean_auroc"]}
        row.update({f"auroc_{label}": values["auroc"] for label, values in metrics["per_label"].items()})
        return row
    return validate


def train_cxr(config: CxrTrainConfig, resume: bool = False) -> Path:
    """Train a chest X-ray classifier; returns the run folder (``best.safetensors`` inside)."""
    run_dir = Path(config.out)
    index = load_chestxray14(config.data, val_fraction=config.val_fraction, seed=config.split_seed)
    cache = StoredImageCache(config.cache) if config.cache else None
    model = build_model(config, index, cache.size if cache is not None else DEFAULT_STORED_SIZE)
    train, val = make_datasets(config, index, model.card, cache)
    loss = bce_loss(train.labels, config.class_weighted)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json())
        (run_dir / "data_index.txt").write_text(index.summary() + "\n")
    fit(model, train, make_validator(val, loss, config.loop), loss, config.loop, run_dir, resume=resume)
    return run_dir
