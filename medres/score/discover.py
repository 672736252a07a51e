"""Finding the files to score: a sorted, streaming, link-safe walk of the input folder.

The walk never holds the file list: it yields entries one by one in a fixed
order (names sorted at every level, files and folders interleaved), which is
also the order of the final tables and the basis of sharding across torchrun
ranks (entry ``i`` goes to rank ``i % world_size``), so every rank sees the
same sequence without exchanging lists.

Links: a symbolic link whose target lies outside the input folder is never
opened (skipped ``outside_root``; the check is :func:`medres.paths.is_within_root`,
the review app's too), so a folder cannot trick the scorer into reading, say,
``/etc`` or another patient archive. Links to files inside the folder are
scored under the link's own path; links to folders are not descended (their
files are scored under their real path, and cycles are impossible). Devices,
pipes and sockets are never opened (a FIFO would block).

Identity: a file is identified by its path relative to the input folder, its
size and its modification time in nanoseconds, combined with the checkpoint's
SHA-256 and the output settings into a journal key. Statting is free where a
content hash would read every byte twice; the price is that a file rewritten
with the same size within the same nanosecond tick is not noticed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medres.errors import (
    LinkedFolderError,
    MedresError,
    NotRegularFileError,
    OutsideRootError,
    UnreadableFolderError,
)
from medres.paths import is_within_root

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class InputFile:
    """One entry found under the input folder.

    Attributes:
        path: Absolute path (as found, links not resolved).
        relative: Path relative to the input folder, POSIX separators, printable.
        size: Bytes (of the link target for followed links, else of the entry).
        mtime_ns: Modification time in nanoseconds.
        skip: Set when the walk itself decided the outcome (a link out of the
            folder, a pipe, an unreadable folder); such entries are never opened.
    """

    path: str
    relative: str
    size: int
    mtime_ns: int
    skip: MedresError | None = None

    def journal_key(self, run_fingerprint: str) -> str:
        """The key under which this file's outcome is journaled for a given run setup."""
        text = "\0".join((self.relative, str(self.size), str(self.mtime_ns), run_fingerprint))
        return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()[:32]


def walk_folder(root: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> Iterator[InputFile]:
    """Every entry under ``root`` (recursively) in sorted order, as :class:`InputFile` s.

    Args:
        root: The input folder.
        exclude: A folder to leave out entirely (the output folder, when it
            lies inside the input folder, so outputs are never scored).
    """
    root_path = Path(root).absolute()
    real_root = os.path.realpath(root_path)
    excluded = os.path.realpath(exclude) if exclude is not None else None
    yield from _walk(str(root_path), str(root_path), real_root, excluded)


def _walk(folder: str, root: str, real_root: str, excluded: str | None) -> Iterator[InputFile]:
    try:
        with os.scandir(folder) as scanner:
            entries = sorted(scanner, key=lambda entry: entry.name)
    except OSError as error:
        if folder != root:
            yield _walk_skip(folder, root, UnreadableFolderError(f"cannot list the folder ({error.strerror})"))
            return
        raise
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if excluded is None or os.path.realpath(entry.path) != excluded:
                yield from _walk(entry.path, root, real_root, excluded)
        elif entry.is_symlink():
            yield _linked_entry(entry.path, root, real_root)
        elif entry.is_file(follow_symlinks=False):
            yield _input_file(entry.path, root, os.lstat(entry.path))
        else:
            yield _walk_skip(entry.path, root, NotRegularFileError())


def _linked_entry(path: str, root: str, real_root: str) -> InputFile:
    """A symbolic link: followed only when its target stays inside the input folder."""
    if not is_within_root(path, real_root):
        return _walk_skip(path, root, OutsideRootError())
    target = os.path.realpath(path)
    if os.path.isdir(target):
        return _walk_skip(path, root, LinkedFolderError())
    try:
        status = os.stat(path)
    except OSError:
        status = os.lstat(path)  # a dangling link: reading it fails later with not_found
    if not stat.S_ISREG(status.st_mode) and os.path.exists(target):
        return _walk_skip(path, root, NotRegularFileError())
    return _input_file(path, root, status)


def _input_file(path: str, root: str, status: os.stat_result, skip: MedresError | None = None) -> InputFile:
    return InputFile(path, relative_path(path, root), status.st_size, status.st_mtime_ns, skip)


def _walk_skip(path: str, root: str, error: MedresError) -> InputFile:
    try:
        status = os.lstat(path)
        size, mtime_ns = status.st_size, status.st_mtime_ns
    except OSError:
        size, mtime_ns = 0, 0
    return InputFile(path, relative_path(path, root), size, mtime_ns, error)


def relative_path(path: str, root: str) -> str:
    """``path`` relative to ``root`` with ``/`` separators, undecodable bytes escaped (printable, UTF-8 safe)."""
    relative = os.path.relpath(path, root).replace(os.sep, "/")
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shard(items: Iterable[ItemT], rank: int, world_size: int) -> Iterator[ItemT]:
    """The items at positions ``rank, rank + world_size, ...``: one rank's share of a fixed order."""
    for index, item in enumerate(items):
        if index % world_size == rank:
            yield item


def count_entries(root: str | os.PathLike[str], exclude: str | os.PathLike[str] | None = None) -> int:
    """How many entries :func:`walk_folder` yields (a stat-only pass, for the progress bar's ETA)."""
    return sum(1 for _ in walk_folder(root, exclude))
