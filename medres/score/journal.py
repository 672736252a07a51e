"""The append-only journal that makes scoring resumable and idempotent.

Each process appends one JSON object per finished file to its own file,
``journal-rank<R>.jsonl`` in the output folder, and flushes and fsyncs after
every batch. A record is written only once the file's outcome is final (its
probabilities computed, or its error known), so at any moment the journal
holds complete outcomes, plus at most one partial last line if the process was
killed mid-write. That line is ignored when reading and cut off before the
next append, so a restarted run redoes exactly the files without a complete
record, and every file ends up accounted for once.

Records are keyed by :meth:`medres.score.discover.InputFile.journal_key`
(relative path, size, mtime, checkpoint SHA-256 and output settings): a file
that changed, a different checkpoint or different output settings make a new
key, so stale outcomes are never reused; the final tables take, for every
file found, the record under its current key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

JOURNAL_GLOB = "journal-rank*.jsonl"
JOURNAL_VERSION = 1


def journal_path(out_dir: Path, rank: int) -> Path:
    """The journal file rank ``rank`` appends to."""
    return out_dir / f"journal-rank{rank}.jsonl"


class Journal:
    """One process's append-only journal (one writer per file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _cut_partial_last_line(path)
        self._stream = open(path, "ab")

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append records, then flush and fsync: after this returns they survive a crash."""
        lines = [json.dumps({"v": JOURNAL_VERSION, **record}, separators=(",", ":")).encode() + b"\n"
                 for record in records]
        if not lines:
            return 0
        self._stream.write(b"".join(lines))
        self._stream.flush()
        os.fsync(self._stream.fileno())
        return len(lines)

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_records(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of every rank's journal, in file order (partial lines skipped)."""
    for path in sorted(out_dir.glob(JOURNAL_GLOB)):
        with open(path, "rb") as stream:
            for line in stream:
                record = _parse(line)
                if record is not None:
                    yield record


class JournalIndex:
    """Where each key's latest complete record lies, to read records back one by one.

    Holds a key -> (file, offset) map rather than the records themselves, so
    rebuilding the tables of a huge run needs memory for the keys only; the
    records are read back (from the page cache, usually) as the walk needs them.
    """

    def __init__(self, out_dir: Path) -> None:
        self.paths = sorted(out_dir.glob(JOURNAL_GLOB))
        self.locations: dict[str, tuple[int, int]] = {}
        for file_index, path in enumerate(self.paths):
            with open(path, "rb") as stream:
                offset = 0
                for line in stream:
                    record = _parse(line)
                    if record is not None:
                        self.locations[record["key"]] = (file_index, offset)
                    offset += len(line)
        self._streams = [open(path, "rb") for path in self.paths]

    def get(self, key: str) -> dict[str, Any] | None:
        """The latest complete record for ``key``, or ``None``."""
        location = self.locations.get(key)
        if location is None:
            return None
        stream = self._streams[location[0]]
        stream.seek(location[1])
        return _parse(stream.readline())

    def close(self) -> None:
        for stream in self._streams:
            stream.close()

    def __enter__(self) -> JournalIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def completed_keys(out_dir: Path) -> set[str]:
    """Keys of every file with a complete record: what a restarted run skips."""
    return {record["key"] for record in read_records(out_dir)}


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n"):
        return None  # the process was killed while writing this line
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str) or "outcome" not in record:
        return None
    return record


def _cut_partial_last_line(path: Path) -> None:
    """Truncate a final line without its newline, so the next append starts a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as stream:
        size = stream.seek(0, os.SEEK_END)
        if size == 0:
            return
        stream.seek(size - 1)
        if stream.read(1) == b"\n":
            return
        position = size
        while position > 0:
            step = min(65536, position)
            stream.seek(position - step)
            chunk = stream.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                stream.truncate(position - step + newline + 1)
                break
            position -= step
        else:
            stream.truncate(0)
        stream.flush()
        os.fsync(stream.fileno())
