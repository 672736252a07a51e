"""Evaluate a chest X-ray classifier on a ChestX-ray14 split and write a report (``medres eval cxr``).

Choices that matter for honest numbers:

- The data is indexed with the split settings the model was trained with
  (``config.json`` next to the checkpoint), so "test" means the patients the
  model never saw; the card's training-data fingerprint is compared too.
- Intervals come from the patient-level bootstrap: images of one patient are
  not independent, and image-level intervals would be too narrow.
- Operating thresholds are chosen on the validation split and only *applied*
  to the evaluated split; thresholds tuned on the test split would make its
  sensitivity and specificity optimistic.
- The evaluated checkpoint is only read, never rewritten: the thresholds go
  into a *calibrated* copy (same weights, card with the thresholds) in the
  report folder. A checkpoint whose bytes never change keeps matching the
  SHA-256 recorded by earlier reports and ``scores.csv`` tables, and a
  ``score`` run can resume against it.
- ``metrics.json`` is the single source: ``report.md`` is rendered from the
  same dict (:mod:`medres.evaluate.cxr_report`), so the two cannot disagree;
  every output is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from torch import nn
from tqdm import tqdm

from medres import __version__ as MEDRES_VERSION
from medres.data import SYNTHETIC_README
from medres.data.chestxray14 import (
    LABELS,
    SEXES,
    VIEWS,
    ChestXray14Index,
    load_chestxray14,
)
from medres.data.cxr_dataset import CxrDataset, StoredImageCache, table_fingerprint
from medres.errors import UnknownLabelError, UsageError
from medres.evaluate.cxr_report import (
    CALIBRATED_CHECKPOINT_NAME,
    SplitPredictions,
    make_output_folder,
    published_comparison,
    write_report_files,
)
from medres.evaluate.localisation import LocalisationSettings, localisation_skip_reason, measure_localisation
from medres.inference import predict_dataset
from medres.metrics import (
    MetricUndefinedWarning,
    choose_thresholds,
    classification_summary,
    expected_calibration_error,
    per_label_metrics,
)
from medres.models import ModelCard, checkpoint_sha256, load_checkpoint, save_checkpoint
from medres.models.checkpoint import RESERVED_METADATA_KEYS
from medres.transforms.cxr import CxrInputTransform

LOGGER = logging.getLogger(__name__)
CALIBRATION_BINS = 10
THRESHOLDS_SOURCE = "val split, Youden J"
THRESHOLD_RULES: tuple[str, ...] = ("youden", "sensitivity_90")
DEFAULT_VAL_FRACTION, DEFAULT_SPLIT_SEED = 0.1, 0
AGE_BANDS: tuple[tuple[str, int | None, int | None], ...] = (
    ("<20", None, 20), ("20-40", 20, 40), ("40-60", 40, 60), ("60-80", 60, 80), (">=80", 80, None),
)
"""Half-open ``[low, high)`` age bands in years, as in ``ChestXray14Index.subset(age_range=...)``."""


@dataclass(frozen=True)
class CxrEvalConfig:
    """Everything ``medres eval cxr`` needs.

    Attributes:
        checkpoint: The ``.safetensors`` checkpoint to evaluate; only read, never written.
        data: The ChestX-ray14 folder (NIH layout).
        out: Folder for report.md, metrics.json, the PNGs, predictions.csv and the calibrated checkpoint.
        split: The split to evaluate; thresholds always come from ``val``.
        cache: A cache from ``medres prepare cxr``; None decodes the PNGs.
        n_boot: Patient-level bootstrap replicates.
        batch_size: Images per forward pass.
        workers: Data loader worker processes.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (see ``medres.train.loop``).
        write_calibrated: Write ``out/calibrated.safetensors``: the same weights with the
            val-split thresholds in the card.
        val_fraction: Override of the training run's split setting (None: config.json, else 0.1).
        split_seed: Override of the training run's split seed (None: config.json, else 0).
        bootstrap_seed: Seed of the bootstrap draws.
        progress: Show tqdm progress bars.
        localisation: Grad-CAM against the split's boxes (:mod:`medres.evaluate.localisation`): True
            (impossible is an error), False (off) or None (on when the split has boxed images).
        cam_method: ``gradcam`` or ``gradcam++``.
    """

    checkpoint: str
    data: str
    out: str
    split: str = "test"
    cache: str | None = None
    n_boot: int = 1000
    batch_size: int = 64
    workers: int = 0
    precision: str = "fp32"
    write_calibrated: bool = True
    val_fraction: float | None = None
    split_seed: int | None = None
    bootstrap_seed: int = 0
    progress: bool = True
    localisation: bool | None = None
    cam_method: str = "gradcam"


def evaluate_cxr(config: CxrEvalConfig) -> dict[str, Any]:
    """Predict, compute every metric, write the calibrated checkpoint and the report.

    Returns:
        The JSON-safe metrics dict written to ``metrics.json``.

    Raises:
        medres.errors.MedresError: Unreadable checkpoint or data, an empty split, a checkpoint
            that changed on disk while it was read, or an unwritable output.
    """
    checkpoint, out = Path(config.checkpoint), Path(config.out)
    model, sha256_read, metadata = read_checkpoint_once(checkpoint)
    calibrated_path = out / CALIBRATED_CHECKPOINT_NAME
    if config.write_calibrated:
        refuse_to_overwrite(checkpoint, calibrated_path)
    make_output_folder(out)  # fail before minutes of prediction, not after
    val_fraction, split_seed, settings_source = resolve_split_settings(config)
    index = load_chestxray14(config.data, val_fraction=val_fraction, seed=split_seed)
    localisation = LocalisationSettings(config.localisation, config.cam_method, config.batch_size, config.progress)
    no_localisation_because = localisation_skip_reason(index, config.split, model.card, localisation)
    cache = StoredImageCache(config.cache) if config.cache else None
    evaluated = predict_split(model, index, config.split, cache, config)
    val = evaluated if config.split == "val" else predict_split(model, index, "val", cache, config)
    labels = shared_labels(model.card.labels)
    metrics = evaluate_predictions(evaluated, val, labels, config.n_boot, config.bootstrap_seed)
    metrics["labels_not_in_data"] = [label for label in model.card.labels if label not in labels]
    located = measure_localisation(model, index, evaluated.table, config.split, localisation, no_localisation_because)
    metrics["localisation"] = located.summary
    card = calibrated_card(model.card, metrics["thresholds"]["per_label"], table_fingerprint(val.table), sha256_read)
    calibrated = {"path": None, "sha256": None, "written": False, "thresholds": card.thresholds}
    if config.write_calibrated:
        write_calibrated_checkpoint(model, card, calibrated_path, metadata)
        calibrated.update(path=str(calibrated_path), sha256=checkpoint_sha256(calibrated_path), written=True)
    metrics["setup"] = describe_setup(config, model.card, index, evaluated, val, (val_fraction, split_seed,
                                      settings_source))
    metrics["setup"]["checkpoint"]["sha256"] = sha256_read
    metrics["setup"]["calibrated_checkpoint"] = calibrated
    metrics = json_safe(metrics)
    write_report_files(out, metrics, evaluated, val, located.files)
    return metrics


def read_checkpoint_once(path: Path) -> tuple[nn.Module, str, dict[str, str]]:
    """The model, the SHA-256 of the bytes it was built from, and the file's other metadata (epoch, score).

    The hash is taken before and after loading: a file replaced in between
    (a training run saving a new best) would give weights the hash does not
    describe, so that is refused rather than reported under the wrong SHA-256.
    """
    sha256_read = checkpoint_sha256(path)
    model = load_checkpoint(path, map_location="cuda" if torch.cuda.is_available() else "cpu")
    with safe_open(path, framework="pt") as handle:
        metadata = {key: value for key, value in (handle.metadata() or {}).items()
                    if key not in RESERVED_METADATA_KEYS}
    if checkpoint_sha256(path) != sha256_read:
        raise UsageError("the checkpoint changed on disk while it was read (is a training run still writing it?); "
                         "evaluate again when it is finished", path=path)
    return model, sha256_read, metadata


def refuse_to_overwrite(checkpoint: Path, calibrated_path: Path) -> None:
    """Evaluating ``OUT/calibrated.safetensors`` with the same ``--out`` would replace the file being evaluated."""
    if calibrated_path.exists() and calibrated_path.resolve() == checkpoint.resolve():
        raise UsageError(f"--out would overwrite the checkpoint being evaluated with its calibrated copy "
                         f"({CALIBRATED_CHECKPOINT_NAME}); choose another --out folder", path=checkpoint)


def resolve_split_settings(config: CxrEvalConfig) -> tuple[float, int, str]:
    """``(val_fraction, split_seed, their sources)``: each from its option, else config.json, else the default.

    A different ``val_fraction`` or seed would move patients between train and
    val (and, without the official lists, into test), so the training run's own
    settings are the ones that keep "test" unseen.
    """
    run_config_path = Path(config.checkpoint).parent / "config.json"
    saved: Any = {}
    if run_config_path.is_file():
        try:
            saved = json.loads(run_config_path.read_text())
        except (ValueError, OSError) as error:
            LOGGER.warning("ignoring %s (%s); using default split settings", run_config_path, error)
    saved = saved if isinstance(saved, dict) else {}
    values, sources = [], []
    for key, option, default in (("val_fraction", config.val_fraction, DEFAULT_VAL_FRACTION),
                                 ("split_seed", config.split_seed, DEFAULT_SPLIT_SEED)):
        value, source = ((option, "command line") if option is not None else
                         (saved[key], str(run_config_path)) if saved.get(key) is not None else (default, "default"))
        values.append(value)
        sources.append(f"{key} from {source}")
    return float(values[0]), int(values[1]), "; ".join(sources)


def predict_split(model: nn.Module, index: ChestXray14Index, split: str, cache: StoredImageCache | None,
                  config: CxrEvalConfig) -> SplitPredictions:
    """Probabilities of every image of ``split``, with the card's evaluation preprocessing."""
    table = index.table[index.table["split"] == split]
    n_listed = len(table)
    if cache is not None:  # images that failed to decode when the cache was built
        table = table[table["image"].isin(cache.row_of)]
        if cache.size != model.card.stored_size:
            LOGGER.warning("the cache stores %dx%d images but the model was trained on %dx%d ones",
                           cache.size, cache.size, model.card.stored_size, model.card.stored_size)
    table = table.reset_index(drop=True)
    if table.empty:
        raise UsageError(f"the {split!r} split holds no images (split settings: {index.split_detail})",
                         path=index.root)
    if n_listed > len(table):
        LOGGER.warning("%d %s images are not in the cache (failed to decode) and are left out",
                       n_listed - len(table), split)
    dataset = CxrDataset(table, CxrInputTransform(model.card), cache)
    with _progress_bar(model, len(dataset), f"predicting {split}", config.progress):
        probabilities, targets = predict_dataset(model, dataset, config.batch_size, config.workers,
                                                 config.precision)
    labels = shared_labels(model.card.labels)
    outputs = [model.card.labels.index(label) for label in labels]
    targets = targets[:, [LABELS.index(label) for label in labels]]
    return SplitPredictions(split, table, probabilities[:, outputs].astype(np.float64), targets.astype(np.int8),
                            n_dropped=n_listed - len(table))


def shared_labels(labels: Sequence[str]) -> list[str]:
    """The model's labels that ChestX-ray14 also labels, in output order: the ones evaluated, matched by name.

    A published model may predict findings the data set has no label for
    (torchxrayvision's "Lung Opacity", "Fracture" ...): those outputs are left
    out, and the report lists them.

    Raises:
        UnknownLabelError: The model and the data share no label.
    """
    shared = [label for label in labels if label in LABELS]
    if not shared:
        raise UnknownLabelError(f"the model predicts {', '.join(labels)}, none of which ChestX-ray14 labels; "
                                f"its labels: {', '.join(LABELS)}")
    return shared


@contextlib.contextmanager
def _progress_bar(model: nn.Module, total: int, description: str, enabled: bool) -> Iterator[None]:
    """Count images as the model sees them (a forward hook runs in this process, whatever the workers)."""
    bar = tqdm(total=total, desc=description, unit="img", disable=not enabled)

    def count_images(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        bar.update(int(inputs[0].shape[0]))  # return None: a hook's return value would replace the output

    handle = model.register_forward_hook(count_images)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def evaluate_predictions(evaluated: SplitPredictions, val: SplitPredictions, labels: Sequence[str],
                         n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every metric of the report from predictions alone (no model, no files), for tests and notebooks.

    A label with a single class in ``evaluated`` gets None (with a
    :class:`MetricUndefinedWarning`) and is left out of the means.
    """
    labels = list(labels)
    summary = classification_summary(evaluated.targets, evaluated.probabilities, labels,
                                     groups=evaluated.table["patient_id"].to_numpy(), n_boot=n_boot, seed=seed)
    undefined = [label for label in labels if summary["per_label"][label]["auroc"] is None]
    if undefined:
        LOGGER.warning("AUROC/AUPRC undefined on the %s split (one class only): %s; left out of the means",
                       evaluated.split, ", ".join(undefined))
    thresholds = choose_thresholds(val.targets, val.probabilities, labels)
    no_threshold = [label for label in labels if math.isnan(thresholds[label]["youden"])]
    if no_threshold:
        LOGGER.warning("no threshold chosen for %s: one class only on the %s split; they keep their previous "
                       "thresholds in the calibrated card", ", ".join(no_threshold), val.split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)  # already warned by choose_thresholds
        val_mean_auroc = per_label_metrics(val.targets, val.probabilities, labels)["mean_auroc"]
    return {
        "summary": summary,
        "undefined_labels": undefined,
        "thresholds": {"source": THRESHOLDS_SOURCE, "split": val.split, "n_images": len(val.table),
                       "undefined_labels": no_threshold,
                       "per_label": operating_points(evaluated, thresholds, labels)},
        "val": {"n_images": len(val.table), "n_patients": int(val.table["patient_id"].nunique()),
                "mean_auroc": val_mean_auroc},
        "calibration": calibration_summary(evaluated, summary, labels),
        "subgroups": subgroup_table(evaluated, labels),
        "published": published_comparison(summary, labels),
    }


def operating_points(evaluated: SplitPredictions, thresholds: dict[str, dict[str, float]],
                     labels: Sequence[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Sensitivity and specificity on the evaluated split at each label's val-chosen thresholds."""
    points: dict[str, dict[str, dict[str, float | None]]] = {}
    for column, label in enumerate(labels):
        truth, scores = evaluated.targets[:, column], evaluated.probabilities[:, column]
        points[label] = {rule: _operating_point(truth, scores, thresholds[label][rule]) for rule in THRESHOLD_RULES}
    return points


def _operating_point(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    if math.isnan(threshold):
        return {"threshold": None, "sensitivity": None, "specificity": None}
    called_positive = scores >= threshold  # the same rule as sklearn.metrics.roc_curve
    positives, negatives = called_positive[truth == 1], ~called_positive[truth == 0]
    return {"threshold": float(threshold),
            "sensitivity": float(positives.mean()) if positives.size else None,
            "specificity": float(negatives.mean()) if negatives.size else None}


def calibration_summary(evaluated: SplitPredictions, summary: dict[str, Any], labels: Sequence[str]) -> dict:
    """ECE per label (from the summary), pooled over every label x image, and its mean over labels."""
    per_label = {label: summary["per_label"][label]["ece"] for label in labels}
    defined = [value for value in per_label.values() if value is not None]
    return {
        "n_bins": CALIBRATION_BINS,
        "per_label": per_label,
        "pooled": expected_calibration_error(evaluated.targets.ravel(), evaluated.probabilities.ravel(),
                                             CALIBRATION_BINS),
        "mean_over_labels": float(np.mean(defined)) if defined else None,
    }


def subgroup_masks(table: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """``(attribute, group, row mask)`` for sex, age band and view; missing ages form an ``unknown`` band."""
    groups = [("sex", sex, table["sex"].eq(sex).to_numpy()) for sex in SEXES]
    age = table["age"].astype("Float64")
    for name, low, high in AGE_BANDS:
        mask = age.notna()
        if low is not None:
            mask &= age.ge(low)
        if high is not None:
            mask &= age.lt(high)
        groups.append(("age", name, mask.to_numpy(dtype=bool, na_value=False)))
    if age.isna().any():
        groups.append(("age", "unknown", age.isna().to_numpy(dtype=bool)))
    groups += [("view", view, table["view"].eq(view).to_numpy()) for view in VIEWS]
    return groups


def subgroup_table(evaluated: SplitPredictions, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and per-label AUROC in each subgroup, with counts; labels undefined in a subgroup are None.

    Small subgroups often lack positives of rare labels, so their warnings are
    silenced here and ``n_labels_defined`` says over how many labels each mean runs.
    """
    rows = []
    for attribute, group, mask in subgroup_masks(evaluated.table):
        part = evaluated.select(mask)
        aurocs: dict[str, float | None] = {label: None for label in labels}
        mean = None
        if len(part.table):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetricUndefinedWarning)
                metrics = per_label_metrics(part.targets, part.probabilities, list(labels))
            aurocs = {label: metrics["per_label"][label]["auroc"] for label in labels}
            mean = metrics["mean_auroc"]
        rows.append({"attribute": attribute, "group": group, "n_images": len(part.table),
                     "n_patients": int(part.table["patient_id"].nunique()), "mean_auroc": mean,
                     "n_labels_defined": sum(not _is_missing(value) for value in aurocs.values()),
                     "auroc": aurocs})
    return rows


def calibrated_card(card: ModelCard, points: dict[str, dict[str, dict]], val_fingerprint: str,
                    source_sha256: str) -> ModelCard:
    """The card with the val-split thresholds: ``thresholds`` = Youden, both rules in ``extra["thresholds"]``.

    Labels without a threshold on val (one class only) keep their previous
    value. ``extra`` also records the data the thresholds were chosen on and
    the SHA-256 of the checkpoint they were chosen for.
    """
    chosen = {label: {rule: points[label][rule]["threshold"] for rule in THRESHOLD_RULES} for label in points}
    youden = {label: rules["youden"] for label, rules in chosen.items() if rules["youden"] is not None}
    return card.with_overrides(
        thresholds={**card.thresholds, **youden},
        extra={**card.extra, "thresholds": chosen, "thresholds_source": THRESHOLDS_SOURCE,
               "thresholds_data_fingerprint": val_fingerprint, "calibrated_from_sha256": source_sha256})


def write_calibrated_checkpoint(model: nn.Module, card: ModelCard, path: Path, metadata: dict[str, str]) -> Path:
    """Write the evaluated weights with ``card`` (and the source's epoch/score metadata) to ``path``, atomically.

    The weights are the ones just evaluated (the model in memory), so the
    thresholds can never be paired with other weights, whatever happened to
    the source file meanwhile.
    """
    try:
        return save_checkpoint(model, path, card=card, extra_metadata=metadata)
    except OSError as error:
        raise UsageError(f"cannot write the calibrated checkpoint ({error.strerror or error}); "
                         "choose another --out folder, or pass --no-calibrated-checkpoint", path=path) from error


def describe_setup(config: CxrEvalConfig, card: ModelCard, index: ChestXray14Index, evaluated: SplitPredictions,
                   val: SplitPredictions, split_settings: tuple[float, int, str]) -> dict[str, Any]:
    """Provenance for the report: model, data, split settings, and whether the training index matches."""
    index_fingerprint = table_fingerprint(index.table)
    trained_on = card.training_data_fingerprint
    return {
        "medres_version": MEDRES_VERSION,
        "checkpoint": {"path": str(config.checkpoint), "sha256": None, "model": card.name,
                       "input_size": list(card.input_size),
                       "training_data_fingerprint": trained_on or None, "index_fingerprint": index_fingerprint,
                       "index_matches_training": (index_fingerprint == trained_on) if trained_on else None},
        "data": {"path": str(config.data), "synthetic": (Path(config.data) / SYNTHETIC_README).is_file(),
                 "label_version": index.label_version, "split_method": index.split_method,
                 "split_detail": index.split_detail, "val_fraction": split_settings[0],
                 "split_seed": split_settings[1], "split_settings_source": split_settings[2]},
        "evaluated": {"split": evaluated.split, "n_images": len(evaluated.table),
                      "n_patients": int(evaluated.table["patient_id"].nunique()),
                      "n_dropped_not_in_cache": evaluated.n_dropped},
        "n_boot": config.n_boot, "bootstrap_seed": config.bootstrap_seed, "precision": config.precision,
    }


def json_safe(value: Any) -> Any:
    """Plain JSON types, with NaN/inf/NA as None, so ``json.dumps(..., allow_nan=False)`` succeeds."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return None if _is_missing(value) else value


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)

