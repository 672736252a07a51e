"""The paths each command reads, checked before it starts: the same mistake gets the same reason everywhere.

:data:`INPUT_ARGUMENTS` lists, for every subcommand, the arguments that name
something to read and what kind of thing each must be. ``medres`` checks them
all (see :func:`check_inputs`) before the subcommand's handler runs, so a
missing path is ``not_found``, an empty folder ``empty_input``, a file where a
folder is wanted ``usage``, and a checkpoint that is not safetensors
``not_safetensors`` (a pickle: ``unsafe_checkpoint``) in every command, each
within a second and before any data or model is loaded. What only a command
knows (a ChestX-ray14 layout, a model card's task) it checks itself.

A training run's ``--init`` is not a checkpoint argument: it takes the words
``imagenet`` and ``none``, or a file that is checked here only to exist; the
command then reads it with the importers of published weights, which
rebuild tensors from a pickle without running it (see
:mod:`medres.models.pretrained`). Every ``--checkpoint`` still refuses every
pickle.

Output arguments (``--out``, a training run's working ``--cache``) are not
listed: they need not exist yet.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medres.errors import EmptyInputError, NotFoundError, UsageError

FOLDER = "folder"  # an existing, readable folder with at least one file somewhere below it
IMAGE = "image"  # an image file, or a folder holding one (a DICOM series): exists, and not an empty folder
CHECKPOINT = "checkpoint"  # a .safetensors file, proven by its header (nothing is unpickled)
FILE = "file"  # an existing, readable file (a CSV, a split file)
INITIAL_WEIGHTS = "initial_weights"  # imagenet, none, or an existing file of weights (read safely by the command)
INIT_WORDS = ("imagenet", "none")  # medres.models.pretrained.INIT_KEYWORDS (not imported: the check stays light)

INPUT_ARGUMENTS: dict[tuple[str, ...], dict[str, str]] = {
    ("app",): {"checkpoint": CHECKPOINT, "seg_checkpoint": CHECKPOINT, "root": FOLDER},
    ("demo",): {},
    ("eval", "cxr"): {"checkpoint": CHECKPOINT, "data": FOLDER, "cache": FOLDER},
    ("eval", "seg"): {"checkpoint": CHECKPOINT, "predictions": FOLDER, "data": FOLDER, "split_file": FILE},
    ("import-weights",): {"file": FILE},
    ("info",): {"path": IMAGE},
    ("prepare", "cxr"): {"data": FOLDER},
    ("score",): {"checkpoint": CHECKPOINT, "input_dir": FOLDER},
    ("segment",): {"checkpoint": CHECKPOINT, "input": IMAGE},
    ("train", "cxr"): {"init": INITIAL_WEIGHTS, "resume": FOLDER, "data": FOLDER, "cache": FOLDER},
    ("train", "seg"): {"init": INITIAL_WEIGHTS, "resume": FOLDER, "data": FOLDER},
    ("train", "vol"): {"init": INITIAL_WEIGHTS, "resume": FOLDER, "data": FOLDER, "labels": FILE},
}
"""Subcommand (as typed, e.g. ``("train", "cxr")``) -> {argument destination: kind}, checked in this order
(checkpoints first: a pickle is refused before anything else is looked at)."""


def check_inputs(command: tuple[str, ...], args: argparse.Namespace) -> None:
    """Check every input argument of ``command`` that was given; raises the first problem found.

    Raises:
        NotFoundError, EmptyInputError, UsageError: A path is missing, an empty
            folder, or of the wrong kind (a file for a folder, a folder for a file).
        NotSafetensorsError, UnsafeCheckpointError, TruncatedError, CorruptError:
            A checkpoint argument is not a complete safetensors file.
    """
    for destination, kind in INPUT_ARGUMENTS.get(command, {}).items():
        value = getattr(args, destination, None)
        if value is not None:
            CHECKS[kind](Path(value), option_name(destination))


POSITIONAL_ARGUMENTS = frozenset({"path", "input", "input_dir", "file"})


def option_name(destination: str) -> str:
    """How the user typed the argument: ``--seg-checkpoint`` for ``seg_checkpoint``, ``PATH`` for ``path``."""
    if destination in POSITIONAL_ARGUMENTS:
        return destination.upper()
    return "--" + destination.replace("_", "-")


def require_folder(path: Path, option: str) -> None:
    """An existing, readable folder with at least one file in it (at any depth)."""
    _require_existing(path, option)
    if not path.is_dir():
        raise UsageError(f"{option} must be a folder, and this is a file", path=path)
    if not os.access(path, os.R_OK | os.X_OK):
        raise UsageError(f"the folder given as {option} cannot be read (permissions)", path=path)
    _require_some_file(path, option)


def require_image(path: Path, option: str) -> None:
    """An image file, or a folder (a DICOM series) that is not empty; the reader judges the content."""
    _require_existing(path, option)
    if path.is_dir():
        _require_some_file(path, option)
    elif not os.access(path, os.R_OK):
        raise UsageError(f"the file given as {option} cannot be read (permissions)", path=path)


def require_file(path: Path, option: str) -> None:
    """An existing, readable file."""
    _require_existing(path, option)
    if not path.is_file():
        raise UsageError(f"{option} must be a file, and this is a folder", path=path)
    if not os.access(path, os.R_OK):
        raise UsageError(f"the file given as {option} cannot be read (permissions)", path=path)


def require_checkpoint(path: Path, option: str) -> None:
    """A complete safetensors file, proven from its header; pickles and text files are refused by name."""
    from medres.io.safetensors_header import check_safetensors_file

    require_file(path, option)
    check_safetensors_file(path)


def require_initial_weights(path: Path, option: str) -> None:
    """``imagenet``, ``none``, or an existing, readable file (the command reads it without running it)."""
    if str(path) in INIT_WORDS:
        return
    require_file(path, option)


def _require_existing(path: Path, option: str) -> None:
    if not path.exists():
        raise NotFoundError(f"no such file or folder (given as {option})", path=path)


def _require_some_file(folder: Path, option: str) -> None:
    """Stops at the first file found, so a large tree costs one directory listing or a few."""
    for _root, _folders, files in os.walk(folder):
        if files:
            return
    raise EmptyInputError(f"the folder given as {option} holds no files", path=folder)


CHECKS = {FOLDER: require_folder, IMAGE: require_image, CHECKPOINT: require_checkpoint, FILE: require_file,
          INITIAL_WEIGHTS: require_initial_weights}
