"""The layout of a ``medres score`` output folder, and the one reader of it.

Every name a scoring run gives its outputs is defined here, and both the
writer (:mod:`medres.score.report`, :mod:`medres.score.outputs`,
:mod:`medres.score.heatmaps`) and every reader (the review app's worklist,
notebooks, tools) use these definitions, so the two cannot drift apart::

    OUT_DIR/
      scores.csv | scores.parquet    one row per scored image; ``path`` is relative to the input root
      errors.csv | errors.parquet    one row per file skipped or failed
      run.json                       counts, timings, arguments, and ``input_root``: the absolute,
                                     resolved folder that was scored (wherever ``score`` ran from)
      heatmaps/<sop_pseudonym>/<Label>.png    Grad-CAM of each positive call (``--heatmaps`` only)

A row's image is ``input_root / path``; a row's heatmap follows from its
``sop_pseudonym`` and the label (:func:`heatmap_file`), so neither needs a
column of its own. When the scored folder has moved since the run, the reader
says where the run recorded it and accepts its new place instead of guessing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from medres.errors import DatasetLayoutError, InputMovedError

if TYPE_CHECKING:
    import pandas as pd

SCORES_TABLE, ERRORS_TABLE = "scores", "errors"
TABLE_FORMATS: tuple[str, ...] = ("csv", "parquet")
RUN_FILE = "run.json"
HEATMAP_FOLDER = "heatmaps"
HEATMAP_SUFFIX = ".png"
INPUT_ROOT_KEY = "input_root"
UNKNOWN_PSEUDONYM = "unknown"
PROBABILITY_PREFIX, CALL_PREFIX = "prob_", "call_"
REQUIRED_COLUMNS: tuple[str, ...] = ("sop_pseudonym", "path")
ERROR_COLUMNS: tuple[str, ...] = ("path", "outcome", "reason", "message")
DEFAULT_MOVED_FIX = "give its new place (read_score_folder(folder, input_root=NEW_PLACE))"


@dataclass(frozen=True)
class ScoreFolder:
    """One output folder of ``medres score``, as read back.

    Attributes:
        folder: The output folder (absolute, resolved).
        table: The scores table (``prob_`` columns as floats, ``call_`` as integers, the rest as text).
        labels: Labels with a ``prob_`` column, in table order.
        errors: The errors table (empty when the run wrote none).
        run_info: ``run.json`` (empty when absent or unreadable).
        input_root: Where the scored files are looked for: the override given to
            :func:`read_score_folder`, else the recorded one (None when neither).
        recorded_input_root: The input root ``run.json`` records (None for runs
            of a medres that did not record it).
    """

    folder: Path
    table: pd.DataFrame
    labels: tuple[str, ...]
    errors: pd.DataFrame
    run_info: dict[str, Any] = field(default_factory=dict)
    input_root: Path | None = None
    recorded_input_root: Path | None = None


def table_file_name(table: str, table_format: str) -> str:
    """The file name of ``table`` (``scores`` or ``errors``) in ``table_format`` (``csv`` or ``parquet``)."""
    return f"{table}.{table_format}"


def input_root_record(input_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The ``run.json`` entry naming the scored folder: absolute and resolved, whatever the working directory."""
    return {INPUT_ROOT_KEY: str(Path(input_dir).resolve())}


def heatmap_file(heatmap_folder: Path, sop_pseudonym: str, label: str) -> Path:
    """Where the heatmap of ``label`` for the image ``sop_pseudonym`` lives under ``heatmap_folder``.

    The writer and the reader both call this, so the layout is defined once:
    ``<sop_pseudonym>/<Label>.png``, named by pseudonym so no identifier
    reaches a file name.
    """
    return heatmap_folder / (sop_pseudonym or UNKNOWN_PSEUDONYM) / f"{label}{HEATMAP_SUFFIX}"


def read_score_folder(folder: str | os.PathLike[str],
                      input_root: str | os.PathLike[str] | None = None) -> ScoreFolder:
    """Read the tables and ``run.json`` of an output folder of ``medres score``.

    Args:
        folder: The output folder (``--out`` of the run).
        input_root: The scored folder's new place, when it was moved after the
            run; None to use the place ``run.json`` records.

    Raises:
        DatasetLayoutError: No scores table, or it lacks ``sop_pseudonym``,
            ``path`` or any ``prob_<Label>`` column.
    """
    folder = Path(folder).resolve()
    run_info = _read_run_info(folder / RUN_FILE)
    table_format = _table_format(folder, run_info)
    scores_path = folder / table_file_name(SCORES_TABLE, table_format)
    if not scores_path.is_file():
        raise DatasetLayoutError(f"no {table_file_name(SCORES_TABLE, 'csv')} or "
                                 f"{table_file_name(SCORES_TABLE, 'parquet')}: not an output folder of "
                                 "`medres score` (or its run did not finish)", path=folder)
    table = _read_table(scores_path)
    labels = tuple(column.removeprefix(PROBABILITY_PREFIX) for column in table.columns
                   if column.startswith(PROBABILITY_PREFIX))
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing or not labels:
        raise DatasetLayoutError(f"the scores table lacks columns {', '.join(missing) or 'prob_<Label>'}",
                                 path=scores_path)
    errors = _read_errors(folder / table_file_name(ERRORS_TABLE, table_format))
    recorded = _recorded_input_root(run_info)
    chosen = Path(input_root).resolve() if input_root is not None else recorded
    return ScoreFolder(folder, table, labels, errors, run_info, chosen, recorded)


def require_input_root(score_folder: ScoreFolder, fix: str = DEFAULT_MOVED_FIX) -> Path:
    """The folder the run scored, checked to exist.

    Args:
        score_folder: The folder as read.
        fix: How the reader's user gives the folder's new place (ends the message).

    Raises:
        InputMovedError: The folder is not where the run recorded it (or where
            the override says), or ``run.json`` records no input root.
    """
    where = score_folder.folder / RUN_FILE
    if score_folder.input_root is None:
        given = _arguments(score_folder.run_info).get("input_dir")
        written_as = f" (only as {given!r}, relative to where `medres score` ran)" if given else ""
        raise InputMovedError(f"the run does not record the absolute place of the folder it scored{written_as}; "
                              f"{fix}", path=where)
    if score_folder.input_root.is_dir():
        return score_folder.input_root
    if score_folder.input_root != score_folder.recorded_input_root:
        raise InputMovedError(f"the new place given for the scored folder, {score_folder.input_root}, is not a "
                              f"folder (the run recorded {score_folder.recorded_input_root})", path=where)
    raise InputMovedError(f"the scored folder was recorded at {score_folder.input_root}, which no longer exists: "
                          f"move it back there, or {fix}", path=where)


def image_path(score_folder: ScoreFolder, row: pd.Series | dict[str, Any]) -> Path:
    """The scored image of ``row``: the row's ``path`` under the input root.

    The path is joined as written, not normalised: a reader that must stay
    inside a folder (the review app) checks the result itself.

    Raises:
        InputMovedError: As :func:`require_input_root`.
    """
    return require_input_root(score_folder) / PurePosixPath(str(row["path"]))


def heatmap_path(score_folder: ScoreFolder, row: pd.Series | dict[str, Any], label: str) -> Path | None:
    """The heatmap the run wrote for ``row`` and ``label``; None when it wrote none.

    ``score --heatmaps`` writes one for each positive call only. A pseudonym or
    label that is not a plain file name (a crafted table) has no heatmap.
    """
    pseudonym = str(row["sop_pseudonym"])
    if not (_is_plain_name(pseudonym) and _is_plain_name(label)):
        return None
    path = heatmap_file(score_folder.folder / HEATMAP_FOLDER, pseudonym, label)
    return path if path.is_file() else None


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(character in name for character in "/\\\x00")


def _table_format(folder: Path, run_info: dict[str, Any]) -> str:
    """The run's table format (``run.json``'s arguments), else the first whose scores table exists."""
    recorded = _arguments(run_info).get("table_format")
    if recorded in TABLE_FORMATS:
        return str(recorded)
    present = [name for name in TABLE_FORMATS if (folder / table_file_name(SCORES_TABLE, name)).is_file()]
    return (present or list(TABLE_FORMATS))[0]


def _arguments(run_info: dict[str, Any]) -> dict[str, Any]:
    """The run's options as ``run.json`` records them (empty when absent)."""
    arguments = run_info.get("arguments")
    return arguments if isinstance(arguments, dict) else {}


def _read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table with the same column types either way."""
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
            calls = [column for column in table.columns if column.startswith(CALL_PREFIX)]
            table = table.astype({column: "int64" for column in calls})
        else:
            header = pd.read_csv(path, nrows=0).columns
            table = pd.read_csv(path, dtype={column: _csv_type(column) for column in header},
                                keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetLayoutError(f"the table cannot be read ({error})", path=path) from None
    return table


def _csv_type(column: str) -> str:
    if column.startswith(PROBABILITY_PREFIX):
        return "float64"
    return "int64" if column.startswith(CALL_PREFIX) else "str"


def _read_errors(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        return pd.DataFrame(columns=list(ERROR_COLUMNS))
    return _read_table(path)


def _read_run_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _recorded_input_root(run_info: dict[str, Any]) -> Path | None:
    value = run_info.get(INPUT_ROOT_KEY)
    if isinstance(value, str) and value and Path(value).is_absolute():
        return Path(value)
    return None


__all__ = [
    "ERRORS_TABLE", "HEATMAP_FOLDER", "RUN_FILE", "SCORES_TABLE", "TABLE_FORMATS", "ScoreFolder",
    "heatmap_file", "heatmap_path", "image_path", "input_root_record", "read_score_folder",
    "require_input_root", "table_file_name",
]
