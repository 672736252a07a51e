"""Atomic file writes: the one place where medres makes output crash-safe.

Everything medres writes for others to read (checkpoints, training state,
tables, reports, caches) goes to a temporary file in the same folder, is
fsynced, renamed over the target with ``os.replace`` and the folder fsynced,
so a reader or a run killed at any moment sees the old file or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def temporary_sibling(path: Path) -> Path:
    """A unique hidden name next to ``path`` (same file system, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], mode: str = "wb", temporary: Path | None = None,
                  **open_options: Any) -> Iterator[IO]:
    """Open a temporary sibling for writing; on success it replaces ``path``, on error it vanishes.

    Args:
        temporary: The temporary file's name, for callers whose clean-up after a
            kill looks for their own pattern; default :func:`temporary_sibling`.
    """
    path = Path(path)
    temporary = temporary or temporary_sibling(path)
    try:
        with open(temporary, mode, **open_options) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_bytes_atomically(path: str | os.PathLike[str], content: bytes) -> None:
    with atomic_output(path, "wb") as stream:
        stream.write(content)


def write_text_atomically(path: str | os.PathLike[str], text: str) -> None:
    with atomic_output(path, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)


def write_with_atomically(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> None:
    """For libraries that write to a path themselves (``np.save``, safetensors' ``save_file``)."""
    path = Path(path)
    temporary = temporary_sibling(path).with_suffix(path.suffix)
    try:
        writer(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename durable; skipped where folders cannot be opened or synced."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
