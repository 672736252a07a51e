"""The output tables (scores, errors) and ``run.json``, written atomically from the journal.

Their names and places are defined in :mod:`medres.score.folder`, which also reads them back.

Tables are rebuilt from the journal at the end of every run, in the walk's
order (sorted by path), rather than appended to as files finish: the order
does not depend on which worker or rank finished first, so a resumed run, a
torchrun run and a single-process run give identical tables. Each table is
streamed into a temporary file in the output folder, fsynced and renamed
over the old one (``os.replace``), so a reader (or a crash) only ever sees the
previous complete table or the new complete one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medres.atomic import atomic_output, fsync_directory
from medres.score.folder import CALL_PREFIX, PROBABILITY_PREFIX, table_file_name

IDENTIFIER_COLUMNS: tuple[str, ...] = ("patient_id", "accession_number")
PARQUET_CHUNK_ROWS = 10_000
TEMPORARY_PREFIX = ".medres-tmp-"


def score_columns(labels: Sequence[str], keep_identifiers: bool) -> list[str]:
    """Columns of the scores table, in order."""
    columns = ["sop_pseudonym", "path", "study_pseudonym", "series_pseudonym", "modality", "view"]
    columns += [PROBABILITY_PREFIX + label for label in labels] + [CALL_PREFIX + label for label in labels]
    columns += ["model", "checkpoint_sha256"]
    return columns + list(IDENTIFIER_COLUMNS) if keep_identifiers else columns


def score_row(info: dict[str, str], relative: str, probabilities: Sequence[float], labels: Sequence[str],
              thresholds: dict[str, float], model_name: str, checkpoint_sha256: str) -> dict[str, Any]:
    """One scores-table row: row fields from the worker, probabilities and calls at the card's thresholds.

    Probabilities are rounded to 6 decimals so CSV and Parquet hold the same numbers.
    """
    row: dict[str, Any] = {"sop_pseudonym": info.get("sop_pseudonym", ""), "path": relative}
    for column in ("study_pseudonym", "series_pseudonym", "modality", "view"):
        row[column] = info.get(column, "")
    rounded = [round(float(value), 6) for value in probabilities]
    row.update({PROBABILITY_PREFIX + label: value for label, value in zip(labels, rounded)})
    row.update({CALL_PREFIX + label: int(float(value) >= thresholds[label])
                for label, value in zip(labels, probabilities)})
    row["model"], row["checkpoint_sha256"] = model_name, checkpoint_sha256
    for column in IDENTIFIER_COLUMNS:
        if column in info:
            row[column] = info[column]
    return row


class TableWriter:
    """Streams rows into ``<name>.<format>`` (see :mod:`medres.score.folder`) atomically; ``commit()`` publishes it.

    CSV rows are written as they come; Parquet rows are buffered
    :data:`PARQUET_CHUNK_ROWS` at a time into row groups, so memory stays
    flat for any table size.
    """

    def __init__(self, out_dir: Path, name: str, columns: Sequence[str], table_format: str) -> None:
        self.path = out_dir / table_file_name(name, table_format)
        self.columns, self.table_format = list(columns), table_format
        self.temporary = out_dir / f"{TEMPORARY_PREFIX}{name}-{secrets.token_hex(6)}.{table_format}"
        self.rows_written = 0
        self._buffer: list[dict[str, Any]] = []
        if table_format == "csv":
            self._stream = open(self.temporary, "w", newline="", encoding="utf-8", errors="backslashreplace")
            self._csv = csv.DictWriter(self._stream, fieldnames=self.columns, extrasaction="ignore")
            self._csv.writeheader()
        else:
            import pyarrow.parquet as parquet

            self._parquet = parquet.ParquetWriter(self.temporary, _arrow_schema(self.columns))

    def write(self, row: dict[str, Any]) -> None:
        self.rows_written += 1
        if self.table_format == "csv":
            self._csv.writerow(row)
            return
        self._buffer.append(row)
        if len(self._buffer) >= PARQUET_CHUNK_ROWS:
            self._flush_parquet()

    def commit(self) -> Path:
        """Finish, fsync and rename the table into place."""
        if self.table_format == "csv":
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
        else:
            self._flush_parquet(final=True)
            self._parquet.close()
            _fsync_file(self.temporary)
        os.replace(self.temporary, self.path)
        fsync_directory(self.path.parent)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            (self._stream if self.table_format == "csv" else self._parquet).close()
        self.temporary.unlink(missing_ok=True)

    def _flush_parquet(self, final: bool = False) -> None:
        import pyarrow as arrow

        if self._buffer or (final and self.rows_written == 0):
            columns = {name: [row.get(name) for row in self._buffer] for name in self.columns}
            self._parquet.write_table(arrow.table(columns, schema=_arrow_schema(self.columns)))
            self._buffer = []


def _arrow_schema(columns: Sequence[str]) -> Any:
    import pyarrow as arrow

    def column_type(name: str) -> Any:
        if name.startswith(PROBABILITY_PREFIX):
            return arrow.float64()
        return arrow.int8() if name.startswith(CALL_PREFIX) else arrow.string()

    return arrow.schema([(name, column_type(name)) for name in columns])


def write_json_atomically(path: Path, data: dict[str, Any]) -> Path:
    """``run.json`` and friends, through :func:`medres.atomic.atomic_output` with this run's temporary prefix."""
    temporary = path.with_name(f"{TEMPORARY_PREFIX}{path.stem}-{secrets.token_hex(6)}.json")
    with atomic_output(path, "w", temporary=temporary, encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")
    return path


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporary tables left by a run killed mid-write; returns how many."""
    stale = list(out_dir.glob(f"{TEMPORARY_PREFIX}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read_table(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV table written here, as text (for tests; tools read a folder with
    :func:`medres.score.folder.read_score_folder`)."""
    with open(path, newline="", encoding="utf-8") as stream:
        yield from csv.DictReader(stream)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as stream:
        os.fsync(stream.fileno())
