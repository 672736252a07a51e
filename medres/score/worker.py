"""Decoder worker processes: read, check, decode and preprocess one file each.

Everything that touches a file's bytes happens here, in a separate process,
so that a decoder which segfaults or calls ``exit`` costs only that file (the
pool notices the dead process; see :mod:`medres.score.pool`). Workers return
only what the tables need: pseudonyms instead of UIDs, allowlisted technical
fields, identifiers only when asked for, and the model's input array. Raw
header values never cross the process boundary.

Workers use one torch thread each (the model in the main process gets the
rest) and are silenced (see :func:`medres.score.privacy.silence_process`).
"""

from __future__ import annotations

import ctypes
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.dataset import Dataset

from medres.errors import InternalError, MedresError, NotDicomError, NotFoundError, library_message
from medres.io import read_image
from medres.io.assemble import image_from_frames
from medres.io.detect import detect_format
from medres.io.dicom import apply_pixel_semantics, decode_frames, read_dicom_dataset
from medres.io.image import Image
from medres.models.card import ModelCard
from medres.score.privacy import identifying_values, pseudonym, redact, redacted_message, silence_process
from medres.score.tasks import TASKS, HeaderFacts

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs, sent once when the pool starts."""

    task: str
    card_json: str
    pseudonym_key: bytes
    keep_identifiers: bool
    size_budget: int
    reduced_j2k: bool = False
    verbose: bool = False


@dataclass
class WorkerResult:
    """One file's result: a model input with its row fields, or an error (reason + message)."""

    info: dict[str, str] = field(default_factory=dict)
    inputs: np.ndarray | None = None
    reason: str = ""
    message: str = ""
    seconds: float = 0.0  # time the worker spent on the file
    finished_at: float = 0.0  # wall-clock time (time.time()) it finished


_settings: WorkerSettings | None = None
_card: ModelCard | None = None


def initialize_worker(settings: WorkerSettings) -> None:
    """Pool initializer: one torch thread, silence, die with the parent, Ctrl-C only in the parent."""
    global _settings, _card
    _settings, _card = settings, ModelCard.from_json(settings.card_json)
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    silence_process(settings.verbose)


def _die_with_parent() -> None:
    """Linux: a worker whose parent is killed (SIGKILL leaves no time to clean up) is killed too."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def prepare_file(path: str, relative: str) -> WorkerResult:
    """Read, check and preprocess one file; never raises for anything the file can cause.

    Args:
        path: The file.
        relative: Its path relative to the input folder (names files without UIDs).
    """
    started = time.perf_counter()
    result = _prepare_or_explain(path, relative)
    result.seconds, result.finished_at = time.perf_counter() - started, time.time()
    return result


def _prepare_or_explain(path: str, relative: str) -> WorkerResult:
    found_identifiers: list[str] = []
    try:
        return _prepare(Path(path), relative, found_identifiers)
    except MedresError as error:
        return WorkerResult(reason=error.reason, message=redacted_message(error, found_identifiers))
    except Exception as error:  # a decoder bug must cost this file only  # noqa: BLE001
        message = f"{type(error).__name__}: {library_message(error)}"
        return WorkerResult(reason=InternalError.reason, message=redact(message, found_identifiers))


def _prepare(path: Path, relative: str, found_identifiers: list[str]) -> WorkerResult:
    settings, card = _settings, _card
    task = TASKS[settings.task]()
    file_format = _sniff(path)
    dataset = None
    if file_format == "dicom":
        dataset = read_dicom_dataset(path)
        found_identifiers.extend(identifying_values(dataset))
        facts = HeaderFacts.from_dataset(dataset)
    else:
        facts = HeaderFacts(source_format=file_format)
    task.check_applies(facts)
    image = decode_dicom(dataset, path) if dataset is not None else read_image(path, size_budget=settings.size_budget)
    inputs = task.prepare(image, card)
    return WorkerResult(info=row_fields(facts, dataset, relative, settings), inputs=inputs)


def _sniff(path: Path) -> str:
    """The file's format by content; empty and unrecognised files are skipped as ``not_dicom``."""
    try:
        size = path.stat().st_size
        file_format = detect_format(path)
    except OSError as error:
        raise NotFoundError(f"cannot open ({error.strerror or error})") from None
    if size == 0:
        raise NotDicomError("an empty file")
    if file_format == "unknown":
        raise NotDicomError()
    return file_format


def decode_dicom(dataset: Dataset, path: Path) -> Image:
    """Decode a DICOM file whose header was parsed for the applicability check.

    Reusing that header skips one of the three parses ``read_image`` would do
    here; the steps are those of :func:`medres.io.read_image` (decode, Modality LUT, VOI,
    MONOCHROME1 inversion, geometry), optionally with JPEG 2000 decoded at a
    reduced resolution (see :mod:`medres.score.reduced`).
    """
    if _settings.reduced_j2k:
        from medres.score.reduced import decode_reduced_if_j2k

        image = decode_reduced_if_j2k(dataset, path, _card, _settings.size_budget)
        if image is not None:
            return image
    frames = decode_frames(dataset, path, size_budget=_settings.size_budget)
    values = apply_pixel_semantics(frames, dataset, path)
    return image_from_frames(values, dataset, path)


def row_fields(facts: HeaderFacts, dataset: Dataset | None, relative: str, settings: WorkerSettings) -> dict[str, str]:
    """The PHI-free fields of the file's row (identifiers only when ``keep_identifiers``).

    Files without a SOP Instance UID (PNG, JPEG) are named by the pseudonym of
    their relative path, so the column is never empty.
    """
    key = settings.pseudonym_key
    sop_uid = facts.sop_instance_uid or f"file:{relative}"
    info = {
        "sop_pseudonym": pseudonym(key, sop_uid),
        "study_pseudonym": pseudonym(key, facts.study_instance_uid),
        "series_pseudonym": pseudonym(key, facts.series_instance_uid),
        "modality": facts.modality,
        "view": facts.view_position,
    }
    if settings.keep_identifiers:
        info["patient_id"] = _header_text(dataset, "PatientID")
        info["accession_number"] = _header_text(dataset, "AccessionNumber")
    return info


def _header_text(dataset: Dataset | None, keyword: str) -> str:
    if dataset is None:
        return ""
    value: Any = dataset.get(keyword)
    return "" if value is None else str(value).strip()


__all__ = ["WorkerSettings", "WorkerResult", "initialize_worker", "prepare_file", "decode_dicom"]
