"""The review app's configuration and per-session state.

Configuration (root folder, checkpoints) comes from the command line that
``medres app`` passes after ``--`` to ``streamlit run``, or from
``MEDRES_APP_*`` environment variables (how tests and containers set it).

Everything a user opens -- the case, its scores, Grad-CAM maps, uploads --
lives in that user's ``st.session_state`` (passed in here as a plain mapping),
never in module globals or the shared model cache, so sessions cannot see
each other's images.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medres.app.files import new_upload_folder, remove_upload_folder
from medres.io import Image, read_image

ENV_ROOT, ENV_CHECKPOINT, ENV_SEG_CHECKPOINT = "MEDRES_APP_ROOT", "MEDRES_APP_CHECKPOINT", "MEDRES_APP_SEG_CHECKPOINT"
ENV_UPLOAD_LIMIT = "MEDRES_APP_UPLOAD_LIMIT_MB"
DEFAULT_UPLOAD_LIMIT_MB = 200
APP_SCRIPT_NAME = "review.py"
CASE, UPLOAD_DIR, CACHE, BROWSE_DIR, UPLOAD_KEY = "case", "upload_dir", "computed", "browse_dir", "upload_signature"
UPLOAD_WIDGET, UPLOAD_GENERATION, UPLOAD_REFUSAL = "upload", "upload_generation", "upload_refusal"
CASE_WIDGET_KEYS: tuple[str, ...] = (
    "cam_class", "xray_preset", "xray_level", "xray_width", "volume_preset", "volume_level", "volume_width",
    "slice_axial", "slice_coronal", "slice_sagittal", "seg_source", "seg_path", "seg_upload",
)
"""Widgets whose values belong to one case (a slice index, a class): reset when another case opens."""
ValueT = TypeVar("ValueT")


@dataclass(frozen=True)
class AppConfig:
    """What the operator configured when starting the app.

    Attributes:
        root: The only folder the app reads from (besides the user's uploads).
        checkpoint: The chest X-ray classifier (``.safetensors``); None disables scoring.
        seg_checkpoint: An optional segmentation model for the volume view.
        upload_limit_mb: Largest upload accepted, in MiB.
    """

    root: Path | None
    checkpoint: Path | None
    seg_checkpoint: Path | None = None
    upload_limit_mb: int = DEFAULT_UPLOAD_LIMIT_MB

    @property
    def upload_limit_bytes(self) -> int:
        return self.upload_limit_mb * 1024 * 1024


@dataclass
class Case:
    """The image a user has open.

    Attributes:
        name: What the user opened: a path relative to the root, or the upload's name.
        path: The file or series folder on disk (inside the root or the session's upload folder).
        image: The decoded image.
        source: ``"root"`` or ``"upload"``.
        heatmap_path: A heatmap written by ``medres score`` for this image, if any.
        preferred_label: The class to explain first (e.g. the worklist's filter class).
    """

    name: str
    path: Path
    image: Image
    source: str
    heatmap_path: Path | None = None
    preferred_label: str | None = None
    key: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.key = f"{self.source}:{self.name}:{uuid.uuid4().hex}"


def parse_app_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Arguments after ``--`` in ``streamlit run medres/app/review.py -- --root DIR ...``."""
    parser = argparse.ArgumentParser(prog="review.py", add_help=False)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--seg-checkpoint", type=Path)
    parser.add_argument("--upload-limit-mb", type=int)
    arguments, _unknown = parser.parse_known_args(list(argv))
    return arguments


def load_config(argv: Sequence[str] | None = None, environ: MutableMapping[str, str] | None = None) -> AppConfig:
    """The configuration: command-line arguments first, then ``MEDRES_APP_*`` variables.

    The command line is read only when the running script is the review app, so
    a test runner's own arguments are never mistaken for the app's.
    """
    argv = list(sys.argv if argv is None else argv)
    environ = os.environ if environ is None else environ
    from_cli = parse_app_arguments(argv[1:]) if argv and Path(argv[0]).name == APP_SCRIPT_NAME else None

    def pick(name: str, variable: str) -> Path | None:
        value = getattr(from_cli, name, None) if from_cli is not None else None
        value = value or environ.get(variable) or None
        return Path(value).expanduser() if value else None

    limit = (from_cli.upload_limit_mb if from_cli is not None else None) or environ.get(ENV_UPLOAD_LIMIT)
    return AppConfig(pick("root", ENV_ROOT), pick("checkpoint", ENV_CHECKPOINT),
                     pick("seg_checkpoint", ENV_SEG_CHECKPOINT), int(limit or DEFAULT_UPLOAD_LIMIT_MB))


def open_case(session: MutableMapping[str, Any], path: Path, name: str, source: str,
              heatmap_path: Path | None = None, preferred_label: str | None = None) -> Case:
    """Read an image and make it the session's open case (results of the last case are dropped).

    Raises:
        MedresError: The file cannot be read (its message is shown to the user).
    """
    case = Case(name, path, read_image(path), source, heatmap_path, preferred_label)
    session[CASE] = case
    session[CACHE] = {}
    for key in CASE_WIDGET_KEYS:
        session.pop(key, None)
    return case


def current_case(session: MutableMapping[str, Any]) -> Case | None:
    """The session's open case, if any."""
    return session.get(CASE)


def close_case(session: MutableMapping[str, Any]) -> None:
    """Forget the open case and everything computed for it."""
    session.pop(CASE, None)
    session[CACHE] = {}


def computed(session: MutableMapping[str, Any], key: tuple, compute: Callable[[], ValueT]) -> ValueT:
    """A per-session, per-case memo: scores and maps are computed once per case and setting."""
    cache = session.setdefault(CACHE, {})
    if key not in cache:
        cache[key] = compute()
    return cache[key]


class UploadFolder:
    """A session's private upload folder, deleted when the session's state is dropped.

    Streamlit discards a session's state some time after its browser tab closes;
    the finalizer then removes the uploaded files, so they do not pile up in /tmp.
    """

    def __init__(self) -> None:
        self.path = new_upload_folder()
        self._finalizer = weakref.finalize(self, remove_upload_folder, self.path)

    def remove(self) -> None:
        self._finalizer()


def upload_folder(session: MutableMapping[str, Any]) -> Path:
    """The session's private upload folder, created on first use."""
    folder = session.get(UPLOAD_DIR)
    if not isinstance(folder, UploadFolder) or not folder.path.is_dir():
        folder = UploadFolder()
        session[UPLOAD_DIR] = folder
    return folder.path


def replace_upload_folder(session: MutableMapping[str, Any]) -> Path:
    """A fresh upload folder; the previous upload's files are deleted."""
    previous = session.pop(UPLOAD_DIR, None)
    if isinstance(previous, UploadFolder):
        previous.remove()
    return upload_folder(session)


def upload_widget_key(session: MutableMapping[str, Any]) -> str:
    """The uploader's widget key: a new one after each refusal, so the refused file leaves the widget.

    A Streamlit uploader keeps its file until the user removes it; a refused
    file left there would be all the widget sends on the next interaction, and
    the next valid file would never get through.
    """
    generation = int(session.get(UPLOAD_GENERATION, 0))
    return UPLOAD_WIDGET if generation == 0 else f"{UPLOAD_WIDGET}_{generation}"


def refuse_upload(session: MutableMapping[str, Any], message: str) -> None:
    """Record why an upload was refused and empty the uploader (a fresh widget key), dropping any open case."""
    close_case(session)
    session[UPLOAD_GENERATION] = int(session.get(UPLOAD_GENERATION, 0)) + 1
    session[UPLOAD_REFUSAL] = message
    session.pop(UPLOAD_KEY, None)


def heatmap_image(path: Path) -> np.ndarray:
    """A heatmap PNG written by ``medres score``, as an RGB array."""
    from PIL import Image as PILImage

    with PILImage.open(path) as picture:
        return np.asarray(picture.convert("RGB"))
