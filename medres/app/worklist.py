"""The worklist: an output folder of ``medres score`` as a sortable, filterable table.

The folder is read by :func:`medres.score.folder.read_score_folder`, the
same module that defines its layout for the writer: a row's image is its
``path`` under the ``input_root`` that ``run.json`` records (absolute,
wherever ``score`` ran from), its heatmap is where ``score --heatmaps``
wrote it. Nothing is guessed: when the scored folder is no longer where the
run recorded it, the reader says so (``input_moved``) and the user gives its
new place (``input_root``).

Every file the worklist leads to is then checked to lie inside the app's
root (:func:`medres.app.files.resolve_under_root`), so a crafted scores
table or ``run.json`` cannot make the app open other files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medres.app.files import resolve_under_root
from medres.errors import NotFoundError, UnsafePathError
from medres.score import folder as score_folder
from medres.score.folder import CALL_PREFIX, PROBABILITY_PREFIX, ScoreFolder

Worklist = ScoreFolder  # the worklist is the score folder as its own reader gives it
MOVED_PROMPT = "Scored folder moved? Its new place:"
MOVED_FIX = f'type its new place, relative to the root, in "{MOVED_PROMPT}"'


def load_worklist(folder: Path, input_root: Path | None = None) -> Worklist:
    """Read an output folder of ``medres score``.

    Args:
        folder: The output folder (already checked to lie inside the root).
        input_root: The scored folder's new place, when it moved after the run
            (already checked to lie inside the root); None for the recorded place.

    Raises:
        DatasetLayoutError: Not an output folder of ``medres score``.
    """
    return score_folder.read_score_folder(folder, input_root)


def filter_worklist(worklist: Worklist, label: str, min_probability: float = 0.0, max_probability: float = 1.0,
                    positives_only: bool = False, descending: bool = True) -> pd.DataFrame:
    """Rows whose ``label`` probability lies in the range, sorted by it; the index keeps row numbers."""
    column = PROBABILITY_PREFIX + label
    table = worklist.table
    keep = table[column].between(min_probability, max_probability)
    call_column = CALL_PREFIX + label
    if positives_only and call_column in table.columns:
        keep &= table[call_column] == 1
    return table[keep].sort_values(column, ascending=not descending, kind="stable")


def display_columns(worklist: Worklist, label: str) -> list[str]:
    """The columns the table shows: identity, view, the chosen label's probability and call."""
    wanted = ["path", "modality", "view", PROBABILITY_PREFIX + label, CALL_PREFIX + label, "sop_pseudonym"]
    return [column for column in wanted if column in worklist.table.columns]


def input_folder(worklist: Worklist, root: str | os.PathLike[str]) -> Path:
    """The scored folder, found and inside the root (the page checks it once, before any row is opened).

    Raises:
        InputMovedError: It is not where the run recorded it (or where the user said).
        UnsafePathError: It lies outside the app's root.
    """
    found = score_folder.require_input_root(worklist, MOVED_FIX)
    return _inside_root(found, root, "the scored folder")


def image_path(worklist: Worklist, row: pd.Series, root: str | os.PathLike[str]) -> Path:
    """The scored image of ``row``, inside the root.

    Raises:
        InputMovedError: The scored folder is not where the run recorded it.
        UnsafePathError: The image (the row's path, or a link on the way) would leave the root.
        NotFoundError: The scored folder is there but the file is not (any more).
    """
    input_folder(worklist, root)
    path = _inside_root(score_folder.image_path(worklist, row), root, "the scored image")
    if not path.is_file():
        raise NotFoundError(f"the scored image is no longer in the scored folder {worklist.input_root} "
                            "(deleted or renamed since the run)", path=str(row["path"]))
    return path


def heatmap_path(worklist: Worklist, row: pd.Series, label: str, root: str | os.PathLike[str]) -> Path | None:
    """The heatmap ``score --heatmaps`` wrote for ``row`` and ``label``, inside the root; None when none.

    Raises:
        UnsafePathError: The heatmap (or a link on the way) would leave the root.
    """
    path = score_folder.heatmap_path(worklist, row, label)
    return None if path is None else _inside_root(path, root, "the heatmap")


def _inside_root(path: Path, root: str | os.PathLike[str], what: str) -> Path:
    """``path`` (absolute, as the reader gives it) resolved and checked to lie inside ``root``."""
    real_root = Path(root).resolve()
    try:
        relative = Path(path).relative_to(real_root)
    except ValueError:
        raise UnsafePathError(f"{what} is outside the app's root {real_root}; start the app with a root that "
                              "holds it", path=path) from None
    return resolve_under_root(real_root, relative.as_posix())


__all__ = ["MOVED_PROMPT", "Worklist", "display_columns", "filter_worklist", "heatmap_path", "image_path",
           "input_folder", "load_worklist"]
