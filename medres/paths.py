"""Staying inside a root folder: the one containment check for ``medres score``'s walk and the review app.

Both read only what lies under a root the operator chose: ``score`` walks an
input folder and must not follow a symbolic link out of it; the app opens
paths typed by a user (or written in a scores table) and must not open
anything outside its ``--root``. A path is inside when its real path, with
every symbolic link resolved, is the root's real path or lies below it; the
comparison is by path components, so ``/data/root2`` is not inside ``/data/root``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from medres.errors import UnsafePathError

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def is_within_root(path: str | os.PathLike[str], real_root: str | os.PathLike[str]) -> bool:
    """True when ``path``, every symbolic link resolved, is ``real_root`` or lies below it.

    Args:
        path: A path to check (absolute, or relative to the working folder); links are resolved
            without raising (a dangling link or a link loop resolves as far as it goes).
        real_root: The root's real path (``os.path.realpath`` of it).
    """
    return Path(os.path.realpath(path)).is_relative_to(real_root)


def resolve_under_root(root: str | os.PathLike[str], relative: str) -> Path:
    """The real path of ``relative`` inside ``root``, or an error saying why it is refused.

    ``relative`` is text from outside (typed by a user, read from a table), so
    beyond the containment check it must not be absolute (POSIX or a Windows
    drive) nor hold a ``..`` part, even one that would come back inside.

    Raises:
        UnsafePathError: ``relative`` holds a NUL, is absolute, has a ``..`` part,
            cannot be resolved (a link loop, a name too long), or resolves
            (following symbolic links) outside the root.
    """
    text = str(relative).strip().replace("\\", "/")
    if "\x00" in text:
        raise UnsafePathError("the path contains a NUL character", path=repr(text))
    if text.startswith("/") or _DRIVE_LETTER.match(text) or os.path.isabs(text):
        raise UnsafePathError("absolute paths are not accepted; give a path relative to the root", path=text)
    if ".." in PurePosixPath(text).parts:
        raise UnsafePathError("'..' is not accepted in paths", path=text)
    real_root = Path(root).resolve()
    try:
        candidate = (real_root / text).resolve()
    except (OSError, RuntimeError) as error:  # a link loop, a name too long
        raise UnsafePathError(f"the path cannot be resolved ({error})", path=text) from None
    if not is_within_root(candidate, real_root):
        raise UnsafePathError("the path (or a link in it) points outside the root", path=text)
    return candidate
