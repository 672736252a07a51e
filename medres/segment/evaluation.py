"""``medres eval seg``: Dice, HD95 and normalized surface Dice in mm, per case and label, with a report.

Predictions come from a checkpoint (run exactly as ``medres segment`` runs it)
or from a folder of existing label files (``<case>.nii.gz`` or
``<case>/segmentation.nii.gz``, e.g. from another tool). Both are compared
with the reference on the reference's own RAS+ grid, at its own spacing, so
distances are millimetres of the scan, not of the model's resampled grid.

Summary conventions: mean and sample standard deviation over cases. HD95 is
infinite when exactly one of prediction and reference is empty; such cases
are counted (``hd95_infinite``) and left out of the HD95 mean, and written as
``null`` in JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medres.data.volumes import VolumeCase, check_case_geometry, label_volume, load_volume_dataset, read_case
from medres.errors import NotFoundError, UsageError
from medres.io import Image, read_image
from medres.metrics import dice, hausdorff95_mm, normalized_surface_dice
from medres.segment.inference import SlidingWindowSettings, segment_image
from medres.segment.pipeline import NIFTI_NAME, load_segmentation_model

METRICS_NAME, REPORT_NAME = "metrics.json", "report.md"


@dataclass(frozen=True)
class SegEvalConfig:
    """Everything ``medres eval seg`` needs: data, output folder, and a checkpoint or a predictions folder."""

    data: str
    out: str
    checkpoint: str | None = None
    predictions: str | None = None
    tolerance_mm: float = 2.0
    window: SlidingWindowSettings = SlidingWindowSettings()
    progress: bool = True


def case_metrics(predicted: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], labels: tuple[str, ...],
                 tolerance_mm: float) -> list[dict[str, Any]]:
    """One row per non-background label: Dice, HD95 (mm) and NSD at ``tolerance_mm``."""
    rows = []
    for value, name in enumerate(labels):
        if value == 0:
            continue
        pred_mask, true_mask = predicted == value, truth == value
        rows.append({"label": name, "dice": dice(pred_mask, true_mask),
                     "hd95_mm": hausdorff95_mm(pred_mask, true_mask, spacing),
                     "nsd": normalized_surface_dice(pred_mask, true_mask, spacing, tolerance_mm)})
    return rows


def summarize(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[str, Any]:
    """Mean and sd per label and metric, and the overall mean Dice (mean of the label means)."""
    per_label = {}
    for name in labels[1:]:
        label_rows = [row for row in rows if row["label"] == name]
        finite_hd95 = [row["hd95_mm"] for row in label_rows if math.isfinite(row["hd95_mm"])]
        per_label[name] = {
            "cases": len(label_rows),
            "dice": _mean_sd([row["dice"] for row in label_rows]),
            "hd95_mm": _mean_sd(finite_hd95),
            "hd95_infinite": len(label_rows) - len(finite_hd95),
            "nsd": _mean_sd([row["nsd"] for row in label_rows]),
        }
    mean_dice = float(np.mean([values["dice"]["mean"] for values in per_label.values()])) if per_label else math.nan
    return {"per_label": per_label, "mean_dice": mean_dice}


def _mean_sd(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "sd": None}
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def read_prediction(folder: Path, case: VolumeCase, reference: Image) -> np.ndarray:
    """A stored prediction for ``case`` on the reference's grid (checked), as integer labels."""
    for candidate in (folder / f"{case.case_id}.nii.gz", folder / f"{case.case_id}.nii",
                      folder / case.case_id / NIFTI_NAME):
        if candidate.is_file():
            prediction = read_image(candidate)
            check_case_geometry(case.case_id, reference, prediction, "prediction")
            return np.rint(prediction.array[0]).astype(np.int32)
    raise NotFoundError(f"no prediction for case {case.case_id} ({case.case_id}.nii.gz or "
                        f"{case.case_id}/{NIFTI_NAME})", path=folder)


def evaluate_segmentations(config: SegEvalConfig) -> dict[str, Any]:
    """Evaluate every labelled case of ``config.data``; writes ``metrics.json`` and ``report.md``."""
    if (config.checkpoint is None) == (config.predictions is None):
        raise UsageError("give exactly one of --checkpoint and --predictions")
    dataset = load_volume_dataset(config.data)
    cases = [case for case in (*dataset.training, *dataset.test) if case.label is not None]
    model = load_segmentation_model(config.checkpoint) if config.checkpoint else None
    labels = tuple(model.card.labels) if model is not None else dataset.labels
    if labels != dataset.labels:
        raise UsageError(f"the model's labels {labels} differ from the data set's {dataset.labels}", path=config.data)
    rows = []
    for case in tqdm(cases, desc="evaluating", unit="case", disable=not config.progress):
        image, label = read_case(case)
        truth = label_volume(label, case.case_id, len(labels))
        if model is not None:
            predicted = segment_image(model, image, config.window).labels
        else:
            predicted = read_prediction(Path(config.predictions), case, label)
        for row in case_metrics(predicted, truth, image.spacing, labels, config.tolerance_mm):
            rows.append({"case": case.case_id, **row})
    results = {"data": str(config.data), "source": config.checkpoint or config.predictions,
               "tolerance_mm": config.tolerance_mm, "cases": rows, **summarize(rows, labels)}
    write_reports(results, Path(config.out))
    return results


def write_reports(results: dict[str, Any], out: Path) -> None:
    """``metrics.json`` (infinite HD95 as null) and a Markdown ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_NAME).write_text(json.dumps(_finite_or_null(results), indent=2, allow_nan=False) + "\n")
    (out / REPORT_NAME).write_text(markdown_report(results))


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item) for item in value]
    return value


def markdown_report(results: dict[str, Any]) -> str:
    """Summary table per label, then every case, in Markdown."""
    tolerance = results["tolerance_mm"]
    lines = ["# Segmentation evaluation\n", f"Data: `{results['data']}`; predictions: `{results['source']}`; "
             f"{len({row['case'] for row in results['cases']})} cases. Mean Dice: **{results['mean_dice']:.4f}**.\n",
             f"| label | Dice | HD95 (mm) | NSD @ {tolerance:g} mm | cases | HD95 infinite |",
             "|---|---|---|---|---|---|"]
    for name, values in results["per_label"].items():
        lines.append(f"| {name} | {_pm(values['dice'])} | {_pm(values['hd95_mm'], 2)} | {_pm(values['nsd'])} | "
                     f"{values['cases']} | {values['hd95_infinite']} |")
    lines += ["", "## Per case", "", "| case | label | Dice | HD95 (mm) | NSD |", "|---|---|---|---|---|"]
    for row in results["cases"]:
        lines.append(f"| {row['case']} | {row['label']} | {row['dice']:.4f} | {row['hd95_mm']:.2f} "
                     f"| {row['nsd']:.4f} |")
    return "\n".join(lines) + "\n"


def _pm(summary: dict[str, float | None], digits: int = 4) -> str:
    if summary["mean"] is None:
        return "n/a"
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"
