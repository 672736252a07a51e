"""What ``medres eval cxr`` writes, and the published AUROCs its report is compared with.

Outputs: ``report.md``, ``metrics.json``, ``predictions.csv``, ``roc_curves.png``
and ``reliability.png``, with Grad-CAM localisation ``localisation.csv`` and
``localisation_gallery.png`` (from :mod:`medres.evaluate.localisation`), and
``calibrated.safetensors`` (written by :mod:`medres.evaluate.cxr` before these),
each written to a temporary file in the same folder,
fsynced and renamed into place, so a reader never sees half a report.
:func:`render_report` reads only the JSON-safe metrics dict that is also
written to ``metrics.json``, so every number in ``report.md`` can be traced to
a machine-readable field. The published per-class AUROCs ship with the package
(``published_auroc.csv``, sources in its ``#`` header lines); the report always
states that their splits, and on synthetic folders their data, differ.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medres import atomic
from medres.errors import UsageError
from medres.evaluate.localisation import TURNED_OFF
from medres.evaluate.plots import reliability_png, roc_curves_png

PUBLISHED_FILE = "published_auroc.csv"
PUBLISHED_TITLES: dict[str, str] = {
    "chexnet_2017": "CheXNet 2017", "wang_2017_official_split": "Wang 2017 (official split)",
    "arnoweng_reimpl": "arnoweng reimpl.", "jrzech_2022": "jrzech 2022", "zoogzog": "zoogzog",
}
THIS_EVALUATION = "this_evaluation"
CALIBRATED_CHECKPOINT_NAME = "calibrated.safetensors"
RESEARCH_NOTICE = "Research use only, not for diagnosis."
MISSING = "–"
SYNTHETIC_WARNING = (
    "> **SYNTHETIC DATA.** The data folder holds `README_SYNTHETIC.txt`: its images are generated, no real "
    "patient is in them, and the numbers below say nothing about real chest X-rays. The comparison with "
    "published results is meaningless on this data; it is shown only so the report's layout can be checked."
)
SPLIT_CAVEAT = (
    "Published numbers come from other test sets: CheXNet used its own random 70/10/20 patient split, Wang et "
    "al. 2017 NIH's official test list, the reimplementations a 22,433-image list of their own; label "
    "versions and preprocessing differ too. Only the official lists form a shared benchmark (best official-split "
    "results compiled by Xiao et al. 2022: about 0.80-0.83 mean AUROC). Differences of a few hundredths are "
    "within what a different split alone produces."
)


@dataclass(frozen=True)
class SplitPredictions:
    """Probabilities and 0/1 targets of one split, row-aligned with ``table`` (index rows)."""

    split: str
    table: pd.DataFrame
    probabilities: np.ndarray
    targets: np.ndarray
    n_dropped: int = 0

    def select(self, mask: np.ndarray) -> SplitPredictions:
        """The rows where ``mask`` is True, e.g. to evaluate a subgroup."""
        return replace(self, table=self.table[mask].reset_index(drop=True),
                       probabilities=self.probabilities[mask], targets=self.targets[mask])


@cache
def _published_text() -> str:
    return resources.files("medres.evaluate").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")


def load_published_auroc() -> tuple[pd.DataFrame, dict[str, str]]:
    """The published per-class test AUROCs (labels x sources) and each source's citation.

    Citations are the ``# key: text`` header lines of the CSV, so data and
    sources live in one file.
    """
    text = _published_text()
    table = pd.read_csv(io.StringIO(text), comment="#", index_col="label")
    sources = {}
    for line in text.splitlines():
        key, _, citation = line.lstrip("# ").partition(": ")
        if line.startswith("#") and key in table.columns:
            sources[key] = citation.strip()
    return table, sources


def published_comparison(summary: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """This evaluation's per-class AUROC next to each published source, with means and citations."""
    table, sources = load_published_auroc()
    per_label = {
        label: {THIS_EVALUATION: summary["per_label"][label]["auroc"],
                **{source: (float(table.at[label, source]) if label in table.index else None)
                   for source in table.columns}}
        for label in labels
    }
    means = {THIS_EVALUATION: summary["mean_auroc"], **{source: float(table[source].mean()) for source in table}}
    return {"per_label": per_label, "mean": means, "sources": sources, "caveat": SPLIT_CAVEAT}


def make_output_folder(out: Path) -> None:
    """Create the report folder, or raise a one-line error naming it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output folder ({error.strerror or error})", path=out) from error


def write_report_files(out: Path, metrics: dict[str, Any], evaluated: SplitPredictions,
                       val: SplitPredictions, extra_files: Mapping[str, bytes] | None = None) -> None:
    """report.md, metrics.json, predictions.csv, the two PNGs and ``extra_files``, each written atomically.

    ``extra_files`` (name -> content, e.g. the localisation table and gallery)
    are written before report.md, which refers to them.
    """
    make_output_folder(out)
    labels = list(metrics["summary"]["per_label"])
    title = f"{evaluated.split} split" + (" - SYNTHETIC DATA" if metrics["setup"]["data"]["synthetic"] else "")
    aurocs = {label: entry["auroc"] for label, entry in metrics["summary"]["per_label"].items()}
    n_bins = metrics["calibration"]["n_bins"]
    files = {
        "metrics.json": json.dumps(metrics, indent=2, allow_nan=False).encode(),
        "predictions.csv": predictions_table([evaluated] if evaluated is val else [evaluated, val], labels)
        .to_csv(index=False).encode(),
        "roc_curves.png": roc_curves_png(evaluated.targets, evaluated.probabilities, labels, aurocs, title),
        "reliability.png": reliability_png(evaluated.targets, evaluated.probabilities, labels, n_bins, title),
        **(extra_files or {}),
        "report.md": render_report(metrics).encode(),
    }
    for name, content in files.items():
        write_bytes_atomically(out / name, content)


def predictions_table(parts: Sequence[SplitPredictions], labels: Sequence[str]) -> pd.DataFrame:
    """``image, patient_id, split`` and one probability column per label; no other identifiers."""
    frames = []
    for part in parts:
        frame = part.table[["image", "patient_id"]].copy()
        frame["split"] = part.split
        frames.append(pd.concat([frame, pd.DataFrame(part.probabilities, columns=list(labels))], axis=1))
    return pd.concat(frames, ignore_index=True)


def write_bytes_atomically(path: Path, content: bytes) -> None:
    """Write a report file atomically; an unwritable folder is a one-line usage error."""
    try:
        atomic.write_bytes_atomically(path, content)
    except OSError as error:
        raise UsageError(f"cannot write ({error.strerror or error})", path=path) from error


def render_report(metrics: dict[str, Any]) -> str:
    """The whole report.md from the metrics dict (the content of metrics.json)."""
    setup = metrics["setup"]
    sections = [
        f"# Chest X-ray classifier evaluation: `{setup['evaluated']['split']}` split",
        SYNTHETIC_WARNING if setup["data"]["synthetic"] else "",
        RESEARCH_NOTICE,
        _setup_section(metrics),
        _calibrated_checkpoint_section(metrics),
        _discrimination_section(metrics),
        _thresholds_section(metrics),
        _calibration_section(metrics),
        _subgroup_section(metrics),
        _localisation_section(metrics),
        _published_section(metrics),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _setup_section(metrics: dict[str, Any]) -> str:
    setup, summary = metrics["setup"], metrics["summary"]
    checkpoint, data, evaluated = setup["checkpoint"], setup["data"], setup["evaluated"]
    matches = {True: "matches the one the model was trained on",
               False: "**differs** from the one the model was trained on: the evaluated images may overlap "
                      "its training images, or the split settings differ",
               None: "cannot be compared (the card records no training-data fingerprint)"}
    lines = [
        f"- Model `{checkpoint['model']}` (input {'x'.join(map(str, checkpoint['input_size']))}), checkpoint "
        f"`{checkpoint['path']}`, SHA-256 `{checkpoint['sha256']}` (read only; its bytes are unchanged)",
        f"- Data `{data['path']}`, labels {data['label_version']}, split {data['split_method']} "
        f"({data['split_detail']}); {data['split_settings_source']}",
        f"- The data index (fingerprint `{checkpoint['index_fingerprint']}`) "
        f"{matches[checkpoint['index_matches_training']]}.",
        f"- Evaluated: {evaluated['n_images']} images of {evaluated['n_patients']} patients"
        + (f" ({evaluated['n_dropped_not_in_cache']} left out: not in the cache)"
           if evaluated["n_dropped_not_in_cache"] else ""),
        f"- Intervals: {round(summary['confidence'] * 100)} % {summary['ci_method']}, seed {setup['bootstrap_seed']}",
    ]
    if metrics.get("labels_not_in_data"):
        lines.append(f"- Labels compared by name: the model's outputs {', '.join(metrics['labels_not_in_data'])} "
                     "have no ChestX-ray14 label and are left out.")
    localisation = metrics.get("localisation") or {}
    if not localisation.get("measured", True) and localisation.get("reason") != TURNED_OFF:
        lines.append(f"- Localisation (Grad-CAM against NIH's boxes): not measured: {localisation['reason']}.")
    return "## Setup\n\n" + "\n".join(lines)


def _calibrated_checkpoint_section(metrics: dict[str, Any]) -> str:
    """Where the checkpoint with the val-split thresholds is, and that scoring should use it."""
    calibrated = metrics["setup"]["calibrated_checkpoint"]
    if not calibrated["written"]:
        return ("## Calibrated checkpoint\n\nNot written (`--no-calibrated-checkpoint`): the thresholds below are "
                "reported only; the evaluated checkpoint keeps the thresholds it had.")
    return "\n\n".join([
        "## Calibrated checkpoint",
        f"`{calibrated['path']}`, SHA-256 `{calibrated['sha256']}`: the evaluated weights, with the thresholds "
        f"chosen on the `{metrics['thresholds']['split']}` split (below) in its model card. **Score with this file**, "
        "so that the calls in `scores.csv` use these thresholds:",
        f"```\nmedres score DICOM_FOLDER --checkpoint {calibrated['path']} --out SCORES_FOLDER\n```",
    ])


def _discrimination_section(metrics: dict[str, Any]) -> str:
    summary, calibration = metrics["summary"], metrics["calibration"]
    n_defined = len(summary["per_label"]) - len(metrics["undefined_labels"])
    lines = [
        "## Discrimination",
        f"Mean AUROC **{_number(summary['mean_auroc'])}** {_interval(summary['mean_auroc_ci'])}, mean AUPRC "
        f"{_number(summary['mean_auprc'])} {_interval(summary['mean_auprc_ci'])}, over the {n_defined} of "
        f"{len(summary['per_label'])} labels that have both classes in this split.",
    ]
    if metrics["undefined_labels"]:
        lines.append(f"Undefined (only one class in this split, reported as null and left out of the means): "
                     f"{', '.join(metrics['undefined_labels'])}.")
    rows = [[label, entry["n_positive"], entry["n_negative"], _number(entry["auroc"]), _interval(entry["auroc_ci"]),
             _number(entry["auprc"]), _interval(entry["auprc_ci"]), _number(calibration["per_label"][label])]
            for label, entry in summary["per_label"].items()]
    lines.append(_table(["Label", "Positives", "Negatives", "AUROC", "95 % CI", "AUPRC", "95 % CI", "ECE"], rows))
    lines.append("![ROC curves per label](roc_curves.png)")
    return "\n\n".join(lines)


def _thresholds_section(metrics: dict[str, Any]) -> str:
    thresholds, setup = metrics["thresholds"], metrics["setup"]
    written = "not written to any checkpoint"
    if setup["calibrated_checkpoint"]["written"]:
        written = (f"written into the card of `{CALIBRATED_CHECKPOINT_NAME}` (`thresholds` = Youden; both rules in "
                   "`extra['thresholds']`)")
    lines = [
        "## Operating points",
        f"Thresholds chosen on the `{thresholds['split']}` split ({thresholds['n_images']} images): Youden J "
        "(maximal sensitivity + specificity - 1) and the highest threshold with sensitivity >= 0.90; "
        f"{written}. Sensitivity and specificity are measured on the `{setup['evaluated']['split']}` split.",
    ]
    if thresholds["undefined_labels"]:
        lines.append(f"No threshold for {', '.join(thresholds['undefined_labels'])}: only one class on the "
                     f"`{thresholds['split']}` split; the card keeps their previous thresholds.")
    if thresholds["split"] == setup["evaluated"]["split"]:
        lines.append("**Thresholds were chosen on the evaluated split itself, so these values are optimistic.**")
    rows = []
    for label, rules in thresholds["per_label"].items():
        rows.append([label, *(_number(rules[rule][key]) for rule in ("youden", "sensitivity_90")
                              for key in ("threshold", "sensitivity", "specificity"))])
    header = ["Label", "Youden threshold", "Sensitivity", "Specificity", "Sens. 0.90 threshold", "Sensitivity",
              "Specificity"]
    lines.append(_table(header, rows))
    return "\n\n".join(lines)


def _calibration_section(metrics: dict[str, Any]) -> str:
    calibration = metrics["calibration"]
    return "\n\n".join([
        "## Calibration",
        f"Expected calibration error ({calibration['n_bins']} equal-width bins): "
        f"{_number(calibration['pooled'])} over all labels pooled, {_number(calibration['mean_over_labels'])} "
        "as the mean of the per-label values (table above).",
        "![Reliability diagram](reliability.png)",
    ])


def _subgroup_section(metrics: dict[str, Any]) -> str:
    subgroups = metrics["subgroups"]
    summary_rows = [[row["attribute"], row["group"], row["n_images"], row["n_patients"], _number(row["mean_auroc"]),
                     row["n_labels_defined"]] for row in subgroups]
    names = [f"{row['attribute']} {row['group']}" for row in subgroups]
    per_label_rows = [[label, *(_number(row["auroc"][label]) for row in subgroups)]
                      for label in metrics["summary"]["per_label"]]
    return "\n\n".join([
        "## Subgroups",
        "Mean AUROC over the labels defined in each subgroup (small subgroups often lack positives of rare labels; "
        "compare means only between subgroups with the same labels defined). Age bands are half-open [low, high).",
        _table(["Attribute", "Group", "Images", "Patients", "Mean AUROC", "Labels defined"], summary_rows),
        "Per-label AUROC by subgroup:",
        _table(["Label", *names], per_label_rows),
    ])


def _localisation_section(metrics: dict[str, Any]) -> str:
    """Pointing game, IoBB, centre baseline and confidence drops per label and overall, with box counts."""
    localisation = metrics.get("localisation") or {}
    if not localisation.get("measured"):
        return ""
    settings, overall = localisation["settings"], localisation["overall"]
    tolerance_low, tolerance_high = settings["pointing_tolerance_px"]
    tolerance = (f"{_number(tolerance_low, 1)} px" if tolerance_low == tolerance_high
                 else f"{_number(tolerance_low, 1)}-{_number(tolerance_high, 1)} px")
    percent = f"{round(settings['top_fraction'] * 100)} %"
    lines = [
        "## Localisation (Grad-CAM)",
        f"{localisation['method']} maps of the `{localisation['split']}` split's {overall['n_boxes']} boxed findings "
        f"on {overall['n_images']} images ({localisation['box_file']}), each map explaining its boxed label and "
        "measured on the radiograph's own pixel grid. Every boxed positive counts, whatever the model's probability.",
        "\n".join([
            f"- Pointing game: a hit when the map's maximum lies in the box grown by "
            f"{settings['pointing_tolerance_rule']}: {tolerance} here. Centre baseline: the same game for a map that "
            "peaks at the image centre; a hit rate means only what it adds to it.",
            f"- IoBB: the share of the map's top {percent} pixels that lie inside the box (Wang et al. 2017).",
            f"- Confidence drop: the probability of the boxed label minus its probability after the top {percent} "
            f"map region (at the model's input size) is replaced by the image mean, against a random {percent} "
            f"region (seed {settings['random_region_seed']}).",
            f"- {localisation['label_spelling_note']}",
        ]),
    ]
    skipped = localisation["n_boxes_skipped"]
    if skipped["label_not_predicted"] or skipped["unreadable_image"]:
        lines.append(f"Left out: {skipped['label_not_predicted']} boxes of labels the model does not predict, "
                     f"{skipped['unreadable_image']} on images that could not be read.")
    header = ["Label", "Boxes", "Images", "Pointing game", "Centre baseline", "Mean IoBB",
              f"Drop, top {percent} CAM", f"Drop, random {percent}"]
    rows = [_localisation_row(label, values) for label, values in localisation["per_label"].items()]
    rows.append(_localisation_row("**All**", overall))
    lines.append(_table(header, rows))
    if localisation.get("gallery"):
        lines.append(f"![Grad-CAM maps on boxed findings]({localisation['gallery']})")
    lines.append(f"Per-box values: `{localisation['table']}`.")
    return "\n\n".join(lines)


def _localisation_row(name: str, values: dict[str, Any]) -> list[Any]:
    return [name, values["n_boxes"], values["n_images"], _number(values["pointing_game"]),
            _number(values["centre_baseline"]), _number(values["mean_iobb"]), _number(values["confidence_drop_cam"]),
            _number(values["confidence_drop_random"])]


def _published_section(metrics: dict[str, Any]) -> str:
    published, data = metrics["published"], metrics["setup"]["data"]
    sources = list(published["sources"]) or [key for key in published["mean"] if key != THIS_EVALUATION]
    rows = [[label, _number(values[THIS_EVALUATION]), *(_number(values[source]) for source in sources)]
            for label, values in published["per_label"].items()]
    rows.append(["**Mean**", _number(published["mean"][THIS_EVALUATION]),
                 *(_number(published["mean"][source]) for source in sources)])
    caveat = published["caveat"]
    if data["synthetic"]:
        caveat = "**This evaluation used SYNTHETIC data, so this comparison is meaningless.** " + caveat
    elif data["split_method"] == "official_lists" and metrics["setup"]["evaluated"]["split"] == "test":
        caveat += " This evaluation's test split is NIH's official test list, the same as Wang et al. 2017."
    return "\n\n".join([
        "## Comparison with published per-class AUROC",
        caveat,
        _table(["Label", "This evaluation", *(PUBLISHED_TITLES.get(source, source) for source in sources)], rows),
        "Sources:\n\n" + "\n".join(f"- {PUBLISHED_TITLES.get(key, key)}: {text}"
                                   for key, text in published["sources"].items()),
    ])


def _number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _interval(bounds: Sequence[float | None]) -> str:
    return MISSING if None in bounds else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
