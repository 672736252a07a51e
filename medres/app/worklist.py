"""The worklist: an output folder of ``medres score`` as a sortable, filterable table.

``scores.csv`` has ``sop_pseudonym, path, study_pseudonym, series_pseudonym,
modality, view``, then ``prob_<Label>`` and ``call_<Label>`` per label,
``model`` and ``checkpoint_sha256``; ``path`` is relative to the scored input
folder, which ``run.json`` may record. ``errors.csv`` lists files that were
skipped or failed. Heatmaps, when the run wrote them, are PNGs found through
a ``heatmap`` column or by the row's pseudonym under ``heatmaps/``.

Every file the worklist leads to is resolved inside the app's root, so a
crafted ``scores.csv`` or ``run.json`` cannot make the app open other files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medres.app.files import UnsafePathError, resolve_under_root
from medres.errors import DatasetLayoutError, MedresError

SCORES_FILE, ERRORS_FILE, RUN_FILE, HEATMAP_FOLDER = "scores.csv", "errors.csv", "run.json", "heatmaps"
REQUIRED_COLUMNS: tuple[str, ...] = ("sop_pseudonym", "path")
INPUT_ROOT_KEYS: tuple[str, ...] = ("input_root", "input", "root", "data", "folder")
PROBABILITY_PREFIX, CALL_PREFIX = "prob_", "call_"


@dataclass(frozen=True)
class Worklist:
    """A loaded ``medres score`` output folder.

    Attributes:
        folder: The output folder (inside the root).
        table: ``scores.csv`` as read.
        labels: Labels that have a ``prob_`` column, in file order.
        run_info: ``run.json`` (empty when absent).
        errors: ``errors.csv`` (empty when absent).
    """

    folder: Path
    table: pd.DataFrame
    labels: tuple[str, ...]
    run_info: dict = field(default_factory=dict)
    errors: pd.DataFrame = field(default_factory=pd.DataFrame)


def load_worklist(folder: Path) -> Worklist:
    """Read ``scores.csv`` (and ``run.json``/``errors.csv`` when present) from an output folder.

    Raises:
        DatasetLayoutError: No ``scores.csv``, or it lacks the required columns.
    """
    scores_path = folder / SCORES_FILE
    if not scores_path.is_file():
        raise DatasetLayoutError(f"no {SCORES_FILE}: not an output folder of `medres score`", path=folder)
    table = pd.read_csv(scores_path, dtype={"sop_pseudonym": str, "path": str}, keep_default_na=False,
                        na_values=[""])
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    labels = tuple(column[len(PROBABILITY_PREFIX):] for column in table.columns
                   if column.startswith(PROBABILITY_PREFIX))
    if missing or not labels:
        raise DatasetLayoutError(f"{SCORES_FILE} lacks columns {', '.join(missing) or 'prob_<Label>'}",
                                 path=scores_path)
    return Worklist(folder, table, labels, _read_json(folder / RUN_FILE), _read_csv(folder / ERRORS_FILE))


def filter_worklist(worklist: Worklist, label: str, min_probability: float = 0.0, max_probability: float = 1.0,
                    positives_only: bool = False, descending: bool = True) -> pd.DataFrame:
    """Rows whose ``label`` probability lies in the range, sorted by it; the index keeps row numbers."""
    column = PROBABILITY_PREFIX + label
    table = worklist.table
    keep = table[column].between(min_probability, max_probability)
    call_column = CALL_PREFIX + label
    if positives_only and call_column in table.columns:
        keep &= table[call_column].astype(str).str.lower().isin(["1", "true", "positive", "1.0"])
    return table[keep].sort_values(column, ascending=not descending, kind="stable")


def display_columns(worklist: Worklist, label: str) -> list[str]:
    """The columns the table shows: identity, view, the chosen label's probability and call."""
    wanted = ["path", "modality", "view", PROBABILITY_PREFIX + label, CALL_PREFIX + label, "sop_pseudonym"]
    return [column for column in wanted if column in worklist.table.columns]


def image_path(worklist: Worklist, row: pd.Series, root: str | os.PathLike[str]) -> Path:
    """The scored image of ``row``, found inside the root.

    ``path`` is relative to the scoring run's input folder: that folder is taken
    from ``run.json`` when it names one inside the root, else the output
    folder's parent and the root itself are tried.

    Raises:
        UnsafePathError: The row's path would leave the root.
        MedresError: The image is not found under any candidate folder.
    """
    relative = str(row["path"])
    for base in _input_folders(worklist, root):
        try:
            candidate = resolve_under_root(root, _join(base, relative))
        except UnsafePathError:
            if base == "":
                raise
            continue
        if candidate.exists():
            return candidate
    raise MedresError("the scored image is not under the root (was the input folder moved?)", path=relative)


def heatmap_path(worklist: Worklist, row: pd.Series, label: str, root: str | os.PathLike[str]) -> Path | None:
    """The run's heatmap PNG for ``row`` and ``label``, if it wrote one (None otherwise)."""
    relative_folder = _relative_to_root(worklist.folder, root)
    if "heatmap" in row.index and isinstance(row["heatmap"], str) and row["heatmap"]:
        try:
            found = resolve_under_root(root, _join(relative_folder, row["heatmap"]))
            return found if found.is_file() else None
        except UnsafePathError:
            return None
    folder = worklist.folder / HEATMAP_FOLDER
    if not folder.is_dir():
        return None
    key = str(row["sop_pseudonym"])
    matches = sorted(folder.rglob(f"{key}*{label}*.png")) or sorted(folder.rglob(f"{key}*.png"))
    for match in matches:
        relative = _relative_to_root(match, root)
        if relative is None:
            continue
        try:
            return resolve_under_root(root, relative)
        except UnsafePathError:
            continue
    return None


def _input_folders(worklist: Worklist, root: str | os.PathLike[str]) -> list[str]:
    """Candidate input folders, relative to the root, most specific first."""
    candidates = []
    for key in INPUT_ROOT_KEYS:
        value = worklist.run_info.get(key)
        if isinstance(value, str) and value:
            relative = _relative_to_root(Path(value), root)
            if relative is not None:
                candidates.append(relative)
    parent = _relative_to_root(worklist.folder.parent, root)
    candidates += [item for item in (parent, "") if item is not None]
    return list(dict.fromkeys(candidates))


def _relative_to_root(path: Path, root: str | os.PathLike[str]) -> str | None:
    real_root = Path(root).resolve()
    resolved = (real_root / path).resolve() if not path.is_absolute() else path.resolve()
    if resolved == real_root:
        return ""
    if real_root in resolved.parents:
        return resolved.relative_to(real_root).as_posix()
    return None


def _join(base: str | None, relative: str) -> str:
    return f"{base}/{relative}" if base else relative


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame()
