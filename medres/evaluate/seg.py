"""``medres eval seg``: Dice, HD95 and normalized surface Dice in mm, per case and label, with a report.

Predictions come from a checkpoint (run exactly as ``medres segment`` runs it)
or from a folder of existing label files (``<case>.nii.gz`` or
``<case>/segmentation.nii.gz``, e.g. from another tool). Both are compared
with the reference on the reference's own RAS+ grid, at its own spacing, so
distances are millimetres of the scan, not of the model's resampled grid.

Which cases: by default the held-out ones. ``medres train seg`` writes the
run's case split to ``split.json`` beside ``best.safetensors``; every case it
lists under ``train`` was seen in training and would flatter the scores, so
only the others are evaluated (its ``val`` cases, and cases of other folders
that the split does not list). ``cases="all"`` evaluates every labelled case,
each tagged with its split. Without a split file (a checkpoint from elsewhere,
or a predictions folder without ``--split-file``) every case is evaluated and
the report says that the split is unknown.

The report carries the research-use notice, and a synthetic-data flag when the
folder says it holds generated data (``README_SYNTHETIC.txt``, as written by
:mod:`medres.synthetic`, or a ``dataset.json`` description mentioning
synthetic data, as :mod:`medres.synthetic.phantoms` writes).

Metrics (definitions in :mod:`medres.metrics.segmentation`, and in the report's "Metric
conventions" section, :data:`METRIC_CONVENTIONS`): Dice; HD95 in both conventions papers use,
each under its own name, ``hd95_mm`` (pooled, equal to MedPy's ``hd95``) and
``hd95_max_directed_mm`` (the larger directed 95th percentile, equal to MONAI's
``compute_hausdorff_distance(percentile=95)``); and ``nsd``, normalised surface Dice at
``tolerance_mm`` (equal to MONAI's ``compute_surface_dice``). Both HD95s and the NSD of a case
and label come from one measurement of its surface distances.

Summary conventions: mean and sample standard deviation over cases. HD95 (either convention)
is infinite when exactly one of prediction and reference is empty; such cases are counted
(``hd95_infinite``, ``hd95_max_directed_infinite``), left out of that HD95's mean, and written
as ``null`` in JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from medres.atomic import write_text_atomically
from medres.data import SYNTHETIC_README
from medres.data.volumes import (
    VolumeCase,
    check_case_geometry,
    label_volume,
    load_volume_dataset,
    read_case,
)
from medres.errors import EmptyInputError, NotFoundError, UsageError
from medres.inference import SlidingWindowSettings
from medres.io import Image, read_image
from medres.metrics import dice, surface_metrics
from medres.segment.labels import segment_image
from medres.segment.pipeline import NIFTI_NAME, load_segmentation_model

METRICS_NAME, REPORT_NAME, SPLIT_NAME = "metrics.json", "report.md", "split.json"
RESEARCH_NOTICE = "Research use only, not for diagnosis."
CASE_SELECTIONS: tuple[str, ...] = ("held-out", "all")
TRAIN, VAL, UNSEEN, UNKNOWN = "train", "val", "unseen", "unknown"
"""A case's split: in the run's training or validation list, not listed by the run's split, or no split known."""
SPLIT_MEANINGS: dict[str, str] = {
    TRAIN: "used to train the model (scores are optimistic)",
    VAL: "the run's validation case: held out from training, though it selected the best epoch",
    UNSEEN: "not in the run's split: never used in training",
    UNKNOWN: "no split file found: may or may not have been used in training",
}
HD95_METRICS: dict[str, str] = {"hd95_mm": "hd95_infinite", "hd95_max_directed_mm": "hd95_max_directed_infinite"}
"""Each HD95 convention's field -> the summary field counting its infinite values (exactly one mask empty)."""
METRIC_HEADINGS: dict[str, str] = {
    "dice": "Dice",
    "hd95_mm": "HD95 pooled (MedPy `hd95`), mm",
    "hd95_max_directed_mm": "HD95 (MONAI `compute_hausdorff_distance`, percentile 95), mm",
    "nsd": "NSD at {tolerance:g} mm (MONAI `compute_surface_dice`)",
}
"""The report's column heading of each metric: its convention and the tool whose value it equals."""
METRIC_CONVENTIONS: dict[str, str] = {
    "surface": "A mask's surface is the mask minus its erosion by the face-connected structuring element (6 "
               "neighbours in 3D, 4 in 2D), voxels on the array border included, as MedPy (`medpy.metric.binary`) "
               "and MONAI (`get_mask_edges`) extract it. Distances are Euclidean, between voxel centres, in mm at "
               "the reference's spacing along each axis.",
    "cropping": "Both masks are cropped to their joint bounding box plus one voxel before distances are measured; "
                "every surface voxel and its neighbours lie inside it, so no value changes, only the cost.",
    "hd95_mm": "The 95th percentile (linear interpolation) of both directed surface-distance sets "
               "taken together (prediction to reference and reference to prediction); equals MedPy's "
               "`medpy.metric.binary.hd95`.",
    "hd95_max_directed_mm": "The larger of the two directed 95th percentiles; equals MONAI's "
                            "`compute_hausdorff_distance(percentile=95)`. Often larger than the pooled HD95, "
                            "markedly so when the errors lie in one direction only (a few stray predicted voxels).",
    "nsd": "The fraction of both masks' surface voxels lying within the tolerance (inclusive) of the other mask's "
           "surface; equals MONAI's `compute_surface_dice` (voxel counting, `use_subvoxels=False`). DeepMind's "
           "`surface-distance` package (and MONAI with `use_subvoxels=True`) weights surface elements on the voxel "
           "faces by their area instead, which gives other values: on an ellipsoid pair of 0.7 x 0.9 x 2.5 mm voxels "
           "(reference centred (24, 20, 10) with radii (14, 11, 5) voxels, prediction centred (25.5, 19, 10.4) with "
           "radii (15, 10, 5.5), 48 x 40 x 20 voxels) DeepMind's package gives 0.7338 where voxel counting gives "
           "0.6223 at 1 mm, and 0.9323 against 0.8614 at 2 mm. Compare NSDs only between studies that used the same "
           "definition.",
    "empty_masks": "Both masks empty: Dice 1, both HD95s 0 mm, NSD 1. Exactly one mask empty: Dice 0, both HD95s "
                   "infinite (null in metrics.json, counted under 'HD95 infinite' and left out of the HD95 means), "
                   "NSD 0. MedPy's `hd95` raises an error in both cases; MONAI gives NaN for HD95 in both and for "
                   "NSD when both masks are empty, and 0 for NSD when exactly one is.",
    "summary": "Per label: mean and sample standard deviation over the evaluated cases.",
}
"""What each reported number means and which tool's value it equals (report.md and metrics.json)."""


@dataclass(frozen=True)
class SegEvalConfig:
    """Everything ``medres eval seg`` needs: data, output folder, and a checkpoint or a predictions folder.

    Attributes:
        cases: ``"held-out"`` (cases the run did not train on; needs a split file), ``"all"``, or None:
            held-out when a split file is found, else all.
        split_file: The training run's ``split.json``; None looks beside the checkpoint.
    """

    data: str
    out: str
    checkpoint: str | None = None
    predictions: str | None = None
    tolerance_mm: float = 2.0
    window: SlidingWindowSettings = field(default_factory=SlidingWindowSettings)
    progress: bool = True
    cases: str | None = None
    split_file: str | None = None


@dataclass(frozen=True)
class RunSplit:
    """The case ids a training run trained and validated on (``split.json``), or nothing when unknown."""

    path: Path | None = None
    train: frozenset[str] = frozenset()
    val: frozenset[str] = frozenset()

    def split_of(self, case_id: str) -> str:
        """``train``, ``val``, ``unseen`` (not listed by the split) or ``unknown`` (no split)."""
        if self.path is None:
            return UNKNOWN
        return TRAIN if case_id in self.train else VAL if case_id in self.val else UNSEEN


@dataclass(frozen=True)
class CaseSelection:
    """The cases to evaluate, each with its split, and one sentence on how they were chosen."""

    cases: tuple[tuple[VolumeCase, str], ...]
    mode: str
    note: str


def case_metrics(predicted: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], labels: tuple[str, ...],
                 tolerance_mm: float) -> list[dict[str, Any]]:
    """One row per non-background label: Dice, both HD95 conventions (mm) and NSD at ``tolerance_mm``.

    The surface distances of each label are measured once (:func:`~medres.metrics.surface_metrics`)
    and give both HD95s and the NSD.
    """
    rows = []
    for value, name in enumerate(labels):
        if value == 0:
            continue
        pred_mask, true_mask = predicted == value, truth == value
        surface = surface_metrics(pred_mask, true_mask, spacing, tolerance_mm)
        rows.append({"label": name, "dice": dice(pred_mask, true_mask), "hd95_mm": surface.hd95_mm,
                     "hd95_max_directed_mm": surface.hd95_max_directed_mm, "nsd": surface.nsd})
    return rows


def summarize(rows: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[str, Any]:
    """Mean and sd per label and metric, and the overall mean Dice (mean of the label means).

    Each HD95 convention is averaged over its finite values; its infinite ones (one mask empty) are counted.
    """
    per_label = {}
    for name in labels[1:]:
        label_rows = [row for row in rows if row["label"] == name]
        summary: dict[str, Any] = {"cases": len(label_rows), "dice": _mean_sd([row["dice"] for row in label_rows])}
        for metric, infinite_count in HD95_METRICS.items():
            finite = [row[metric] for row in label_rows if math.isfinite(row[metric])]
            summary[metric] = _mean_sd(finite)
            summary[infinite_count] = len(label_rows) - len(finite)
        summary["nsd"] = _mean_sd([row["nsd"] for row in label_rows])
        per_label[name] = summary
    mean_dice = float(np.mean([values["dice"]["mean"] for values in per_label.values()])) if per_label else math.nan
    return {"per_label": per_label, "mean_dice": mean_dice}


def _mean_sd(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "sd": None}
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def label_summary_lines(results: dict[str, Any]) -> list[str]:
    """One line per label for the terminal: mean Dice, both HD95 conventions (named) and NSD, with counts."""
    lines = []
    for name, values in results["per_label"].items():
        hd95_pooled, hd95_monai = _mean_text(values["hd95_mm"], 2), _mean_text(values["hd95_max_directed_mm"], 2)
        infinite = f"; HD95 infinite in {values['hd95_infinite']}: one mask empty" if values["hd95_infinite"] else ""
        lines.append(f"{name}: Dice {_mean_text(values['dice'], 4)}, HD95 pooled (MedPy) {hd95_pooled} mm, "
                     f"HD95 (MONAI) {hd95_monai} mm, NSD at {results['tolerance_mm']:g} mm "
                     f"{_mean_text(values['nsd'], 4)} ({values['cases']} cases{infinite})")
    return lines


def _mean_text(summary: dict[str, float | None], digits: int) -> str:
    return "n/a" if summary["mean"] is None else f"{summary['mean']:.{digits}f}"


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
    """Evaluate the selected labelled cases of ``config.data``; writes ``metrics.json`` and ``report.md``."""
    if (config.checkpoint is None) == (config.predictions is None):
        raise UsageError("give exactly one of --checkpoint and --predictions")
    if config.cases not in (None, *CASE_SELECTIONS):
        raise UsageError(f"--cases must be one of {', '.join(CASE_SELECTIONS)}, got {config.cases!r}")
    dataset = load_volume_dataset(config.data)
    labelled = [case for case in (*dataset.training, *dataset.test) if case.label is not None]
    if not labelled:
        raise EmptyInputError("the data set lists no labelled case (labelsTr) to evaluate against", path=config.data)
    split_file = find_split_file(config)
    selection = select_cases(labelled, read_run_split(split_file), config.cases)
    model = load_segmentation_model(config.checkpoint) if config.checkpoint else None
    labels = tuple(model.card.labels) if model is not None else dataset.labels
    if labels != dataset.labels:
        raise UsageError(f"the model's labels {labels} differ from the data set's {dataset.labels}", path=config.data)
    rows = []
    for case, split in tqdm(selection.cases, desc="evaluating", unit="case", disable=not config.progress):
        image, label = read_case(case)
        truth = label_volume(label, case.case_id, len(labels))
        if model is not None:
            predicted = segment_image(model, image, config.window).labels
        else:
            predicted = read_prediction(Path(config.predictions), case, label)
        for row in case_metrics(predicted, truth, image.spacing, labels, config.tolerance_mm):
            rows.append({"case": case.case_id, "split": split, **row})
    results = {"data": str(config.data), "source": config.checkpoint or config.predictions,
               "tolerance_mm": config.tolerance_mm, "synthetic": synthetic_data_marker(Path(config.data)),
               "selection": describe_selection(selection, split_file, len(labelled)),
               "conventions": METRIC_CONVENTIONS, "cases": rows, **summarize(rows, labels)}
    write_reports(results, Path(config.out))
    return results


def find_split_file(config: SegEvalConfig) -> Path | None:
    """The run's ``split.json``: the one given, else the one beside the checkpoint, else None."""
    if config.split_file is not None:
        path = Path(config.split_file)
        if not path.is_file():
            raise NotFoundError("no such split file (a training run's split.json)", path=path)
        return path
    beside = Path(config.checkpoint).parent / SPLIT_NAME if config.checkpoint else None
    return beside if beside is not None and beside.is_file() else None


def read_run_split(path: Path | None) -> RunSplit:
    """Parse ``split.json`` (``{"train": [...], "val": [...]}``, as ``medres train seg`` writes it)."""
    if path is None:
        return RunSplit()
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the run's split ({error})", path=path) from error
    if not (isinstance(split, dict) and all(isinstance(split.get(key), list) for key in (TRAIN, VAL))):
        raise UsageError('not a training run\'s split: expected {"train": [case ids], "val": [case ids]}', path=path)
    return RunSplit(path, frozenset(map(str, split[TRAIN])), frozenset(map(str, split[VAL])))


def select_cases(cases: list[VolumeCase], split: RunSplit, mode: str | None) -> CaseSelection:
    """The held-out cases by default (all of them when no split is known), or all when asked.

    Raises:
        UsageError: Held-out cases asked for without a split file, or none of the cases is held out.
    """
    tagged = tuple((case, split.split_of(case.case_id)) for case in cases)
    if mode == "all" or (mode is None and split.path is None):
        n_train = sum(name == TRAIN for _, name in tagged)
        if split.path is None:
            note = (f"No training split found (no {SPLIT_NAME} beside the checkpoint, and no `--split-file`): all "
                    f"{len(tagged)} labelled cases were evaluated, and any of them may have been used in training.")
        else:
            note = (f"All {len(tagged)} labelled cases were evaluated (`--cases all`); {n_train} of them were used in "
                    f"training ({split.path}), so their scores are optimistic.")
        return CaseSelection(tagged, "all", note)
    if split.path is None:
        raise UsageError(f"--cases held-out needs the training run's split: no {SPLIT_NAME} beside the checkpoint; "
                         "pass --split-file RUN/split.json, or --cases all")
    held_out = tuple((case, name) for case, name in tagged if name != TRAIN)
    if not held_out:
        raise UsageError(f"all {len(tagged)} labelled cases were used in training ({split.path}); evaluate other "
                         "cases, or pass --cases all to score the training cases anyway", path=split.path)
    note = (f"Held-out cases only: {len(held_out)} of {len(tagged)} labelled cases; the other "
            f"{len(tagged) - len(held_out)} were used in training ({split.path}). `--cases all` evaluates every case.")
    return CaseSelection(held_out, "held-out", note)


def describe_selection(selection: CaseSelection, split_file: Path | None, n_labelled: int) -> dict[str, Any]:
    """The selection for ``metrics.json``: mode, split file, counts, each case's split, and the note."""
    return {"mode": selection.mode, "split_file": str(split_file) if split_file else None,
            "n_labelled": n_labelled, "n_evaluated": len(selection.cases), "note": selection.note,
            "case_splits": {case.case_id: name for case, name in selection.cases}}


def synthetic_data_marker(root: Path) -> str | None:
    """Why the folder counts as synthetic data (a sentence), or None when nothing says so.

    Markers: ``README_SYNTHETIC.txt`` (:mod:`medres.synthetic`), or a
    ``dataset.json`` name or description that says "synthetic"
    (:mod:`medres.synthetic.phantoms` writes "Synthetic abdominal CT ...").
    """
    if (root / SYNTHETIC_README).is_file():
        return f"the data folder holds {SYNTHETIC_README}"
    try:
        description = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(description, dict):
        return None
    for key in ("name", "description"):
        text = str(description.get(key, ""))
        if "synthetic" in text.lower():
            return f"dataset.json's {key} says: {text}"
    return None


def write_reports(results: dict[str, Any], out: Path) -> None:
    """``metrics.json`` (infinite HD95 as null) and a Markdown ``report.md``, each written atomically."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / METRICS_NAME, json.dumps(_finite_or_null(results), indent=2, allow_nan=False)
                              + "\n")
        write_text_atomically(out / REPORT_NAME, markdown_report(results))
    except OSError as error:
        raise UsageError(f"cannot write the report ({error.strerror or error})", path=out) from error


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item) for item in value]
    return value


def markdown_report(results: dict[str, Any]) -> str:
    """Notices, which cases and why, the summary table per label, every case with its split, the conventions."""
    tolerance, selection = results["tolerance_mm"], results["selection"]
    headings = [heading.format(tolerance=tolerance) for heading in METRIC_HEADINGS.values()]
    lines = ["# Segmentation evaluation", ""]
    if results["synthetic"]:
        lines += [(f"> **SYNTHETIC DATA** ({results['synthetic'].rstrip('.')}): no real patient is in these scans, "
                   "and the numbers below say nothing about real ones."), ""]
    overview = (f"Data: `{results['data']}`; model or predictions: `{results['source']}`; "
                f"{selection['n_evaluated']} cases. Mean Dice: **{results['mean_dice']:.4f}**.")
    lines += [RESEARCH_NOTICE, "", overview, "", selection["note"], "",
              "HD95 is given in both conventions papers use; see [Metric conventions](#metric-conventions).", "",
              _table_row(["label", *headings, "cases", "HD95 infinite (pooled / MONAI)"]), _table_rule(7)]
    for name, values in results["per_label"].items():
        lines.append(_table_row([name, _pm(values["dice"]), _pm(values["hd95_mm"], 2),
                                 _pm(values["hd95_max_directed_mm"], 2), _pm(values["nsd"]), str(values["cases"]),
                                 f"{values['hd95_infinite']} / {values['hd95_max_directed_infinite']}"]))
    lines += ["", "## Per case", "", _table_row(["case", "split", "label", *headings]), _table_rule(7)]
    for row in results["cases"]:
        lines.append(_table_row([row["case"], row["split"], row["label"], f"{row['dice']:.4f}",
                                 f"{row['hd95_mm']:.2f}", f"{row['hd95_max_directed_mm']:.2f}", f"{row['nsd']:.4f}"]))
    splits = sorted({row["split"] for row in results["cases"]})
    lines += ["", "Splits: " + "; ".join(f"`{name}`: {SPLIT_MEANINGS[name]}" for name in splits) + ".", ""]
    return "\n".join(lines + conventions_section(results["conventions"], tolerance)) + "\n"


def conventions_section(conventions: dict[str, str], tolerance_mm: float) -> list[str]:
    """The "Metric conventions" section: each definition and the tool whose value it equals."""
    titles = {"surface": "Surface", "cropping": "Cropping", "hd95_mm": "HD95 pooled (MedPy convention)",
              "hd95_max_directed_mm": "HD95 (MONAI convention)",
              "nsd": f"Normalised surface Dice (NSD) at {tolerance_mm:g} mm",
              "empty_masks": "Empty masks", "summary": "Summary"}
    return ["## Metric conventions", "", *(f"- **{titles[key]}.** {text}" for key, text in conventions.items())]


def _table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table_rule(columns: int) -> str:
    return "|" + "---|" * columns


def _pm(summary: dict[str, float | None], digits: int = 4) -> str:
    if summary["mean"] is None:
        return "n/a"
    return f"{summary['mean']:.{digits}f} ± {summary['sd']:.{digits}f}"
