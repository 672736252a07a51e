"""Where the review app may read from: the configured root, and the user's own uploads.

Browsing is confined to one root folder. A requested path is refused, with a
message, when it is absolute, contains ``..``, or resolves (through any
symbolic link) to somewhere outside the root, so no crafted path or link can
make the app read a file the operator did not expose. The check is
:func:`medres.paths.resolve_under_root`, the same containment rule that keeps
``medres score``'s walk inside its input folder.

Uploads are checked by content (``detect_format``), not by name, held to a
size limit, and written to a private temporary folder (mode 0700) owned by
the user's session, so one user's files are never visible to another's.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from medres.errors import NotDicomError, NotFoundError, TooLargeError, UnsafePathError
from medres.io.detect import detect_format
from medres.paths import is_within_root, resolve_under_root

DEFAULT_UPLOAD_LIMIT_BYTES = 200 * 1024 * 1024
VIEWABLE_FORMATS = ("dicom", "nifti", "png", "jpeg")
MAX_LISTED = 500
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Entry:
    """One item of a browsed folder.

    Attributes:
        name: The entry's name.
        relative: Its path relative to the root, with ``/`` separators.
        is_dir: Whether it is a folder (a DICOM series or a folder to enter).
    """

    name: str
    relative: str
    is_dir: bool


def resolve_case_path(root: str | os.PathLike[str], relative: str) -> Path:
    """Like :func:`resolve_under_root`, and for a folder (a DICOM series) every file in it too.

    A series reader opens every file of a folder, so one link inside it that
    points out of the root would otherwise be followed.

    Raises:
        UnsafePathError: The path or any entry of the folder leaves the root.
        NotFoundError: Nothing exists at the path.
    """
    path = resolve_under_root(root, relative)
    try:
        exists = path.exists()
    except OSError:
        exists = False
    if not exists:
        raise NotFoundError("no such file or folder under the root", path=relative)
    if path.is_dir():
        real_root = Path(root).resolve()
        for child in path.iterdir():
            if not is_within_root(child, real_root):
                raise UnsafePathError(f"{child.name} in the folder links outside the root", path=relative)
    return path


def list_folder(root: str | os.PathLike[str], relative: str = "", limit: int = MAX_LISTED) -> list[Entry]:
    """Folders, then viewable files (by content), of ``relative`` under ``root``.

    Hidden entries and links that leave the root are left out; at most ``limit``
    entries are listed so a huge folder cannot stall the page.
    """
    folder = resolve_under_root(root, relative)
    entries = []
    for child in sorted(folder.iterdir(), key=lambda item: (not item.is_dir(), item.name.lower())):
        if len(entries) >= limit:
            break
        child_relative = str(PurePosixPath(relative) / child.name) if relative else child.name
        try:
            resolved = resolve_under_root(root, child_relative)
        except UnsafePathError:
            continue
        if child.name.startswith(".") or not (resolved.is_dir() or _is_viewable(resolved)):
            continue
        entries.append(Entry(child.name, child_relative, resolved.is_dir()))
    return entries


def _is_viewable(path: Path) -> bool:
    try:
        return path.is_file() and detect_format(path) in VIEWABLE_FORMATS
    except OSError:
        return False


def parent_of(relative: str) -> str:
    """The parent folder of a relative path ('' for the root itself)."""
    parent = str(PurePosixPath(relative).parent) if relative else ""
    return "" if parent == "." else parent


def new_upload_folder() -> Path:
    """A private temporary folder (0700) for one session's uploads."""
    return Path(tempfile.mkdtemp(prefix="medres-app-"))


def save_upload(folder: Path, name: str, data: bytes, limit_bytes: int = DEFAULT_UPLOAD_LIMIT_BYTES) -> Path:
    """Write one uploaded file into ``folder`` after checking its size and content.

    Raises:
        TooLargeError: More than ``limit_bytes``.
        NotDicomError: The content is not DICOM, NIfTI, PNG or JPEG (whatever its name).
    """
    if len(data) > limit_bytes:
        raise TooLargeError(f"the upload is {len(data):,} bytes; the limit is {limit_bytes:,}", path=name)
    target = folder / _safe_file_name(name)
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(data)
    file_format = detect_format(partial)
    if file_format not in VIEWABLE_FORMATS:
        partial.unlink()
        raise NotDicomError("not a DICOM, NIfTI, PNG or JPEG file (checked by content, not by name)", path=name)
    os.replace(partial, target)
    return target


def save_uploads(folder: Path, files: list[tuple[str, bytes]], limit_bytes: int = DEFAULT_UPLOAD_LIMIT_BYTES) -> Path:
    """Save one upload as a file, or several DICOM files as one series folder; returns what to open.

    Raises:
        MedresError: As :func:`save_upload`; also when several files are not all DICOM.
    """
    total = sum(len(data) for _name, data in files)
    if total > limit_bytes:
        raise TooLargeError(f"the uploads add up to {total:,} bytes; the limit is {limit_bytes:,}")
    if len(files) == 1:
        return save_upload(folder, *files[0], limit_bytes=limit_bytes)
    series = Path(tempfile.mkdtemp(prefix="series-", dir=folder))
    for name, data in files:
        saved = save_upload(series, name, data, limit_bytes)
        if detect_format(saved) != "dicom":
            shutil.rmtree(series, ignore_errors=True)
            raise NotDicomError("several files can only be opened together as one DICOM series", path=name)
    return series


def remove_upload_folder(folder: Path | None) -> None:
    """Delete a session's upload folder (ignored when already gone)."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _safe_file_name(name: str) -> str:
    """A name without folders or odd characters, so an upload cannot land outside its folder."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    cleaned = _SAFE_NAME.sub("_", base).lstrip(".")
    return cleaned or "upload"
