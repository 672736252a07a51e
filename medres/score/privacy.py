"""Keeping patient identity out of every table, log and message the scorer writes.

Three mechanisms:

1. **Keyed pseudonyms.** UIDs are replaced by HMAC-SHA256(key, UID), truncated
   to 16 hex digits (64 bits: collisions are negligible for any archive). A
   plain hash would not do: UIDs are often guessable (organisation root +
   date + counter), so an unkeyed hash could be reversed by enumeration. The
   key is ``--pseudonym-key`` or a random 256-bit key generated once per output
   folder in ``.pseudonym_key`` (mode 0600), so reruns and torchrun ranks give
   the same pseudonyms and one output folder can be linked back to the
   archive only by someone holding the key.
2. **An allowlist of columns.** Rows hold only technical fields; identifiers
   (patient ID, accession number) appear only with ``--keep-identifiers``.
3. **Silence.** pydicom's warnings can quote header values, so warnings and
   library logs are dropped (in the main process and in decoder workers,
   whose stdout/stderr go to /dev/null) unless verbose output is asked for,
   and text an error quotes from a decoder or library (which may echo header
   values) has the file's identifying values masked as whole values; medres's
   own words are never searched, so a patient called "pre" cannot turn
   "presentation state" into "[redacted]sentation state".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom.dataset import Dataset

from medres.errors import MedresError
from medres.io.metadata import IDENTIFYING_KEYWORDS

KEY_FILE = ".pseudonym_key"
PSEUDONYM_HEX_DIGITS = 16
# Header values that identify a patient or an encounter: never written unless asked for.
REDACTED_KEYWORDS = tuple(dict.fromkeys((*IDENTIFYING_KEYWORDS, "PatientBirthDate", "IssuerOfPatientID",
                                         "StudyID", "RequestingPhysician", "PatientAddress")))
QUIET_LOGGERS = ("pydicom", "py.warnings", "PIL")


def pseudonym(key: bytes, value: str) -> str:
    """The keyed pseudonym of ``value`` (empty for an empty value, so 'unknown' stays visible)."""
    if not value:
        return ""
    return hmac.new(key, value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]


def key_fingerprint(key: bytes) -> str:
    """A public fingerprint of the key, for the journal: reruns with another key rescore."""
    return pseudonym(key, "medres-pseudonym-key-fingerprint")


def load_or_create_key(out_dir: Path, given: str | None) -> bytes:
    """The pseudonym key: the given one (never written to disk), else the folder's stored key.

    A new key is written to a private temporary file and hard-linked into
    place, which fails if another process (a torchrun rank) got there first;
    then that process's complete key is read instead. Concurrent starters
    therefore always agree, and nobody ever reads a half-written key.
    """
    if given:
        return given.encode("utf-8")
    path = out_dir / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    return bytes.fromhex(path.read_text().strip())


def _create_key_file(path: Path) -> None:
    temporary = path.with_name(f".medres-key-{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(secrets.token_hex(32) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def identifying_values(dataset: Dataset) -> list[str]:
    """The dataset's identifying values as strings (and the parts of person names), for redaction."""
    values: list[str] = []
    for keyword in REDACTED_KEYWORDS:
        with contextlib.suppress(Exception):  # a malformed value must not stop the redaction of others
            value = dataset.get(keyword)
            if value is None:
                continue
            text = str(value).strip()
            values.append(text)
            values.extend(text.replace("^", " ").split())
    return [value for value in values if value]


def redact(text: str, values: Iterable[str]) -> str:
    """``text`` with each of the values, where it stands as a whole word or phrase, replaced by ``[redacted]``.

    A value counts (in any letter case) only where no letter or digit touches it
    on either side, so a short name is masked where it is quoted and never inside
    another word. Longer values are masked first, so a full name wins over its parts.
    """
    for value in sorted(set(values), key=len, reverse=True):
        if value:
            text = re.sub(rf"(?<![^\W_]){re.escape(value)}(?![^\W_])", "[redacted]", text, flags=re.IGNORECASE)
    return text


def redacted_message(error: MedresError, values: Iterable[str]) -> str:
    """An error's message for a table: medres's words as they are, quoted library text redacted."""
    detail = " ".join(error.detail.split())
    return detail if error.quoted is None else f"{detail} ({redact(error.quoted, values)})"


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Drop Python warnings and library log records for the duration, unless ``verbose``."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def silence_process(verbose: bool = False) -> None:
    """In a worker process: no warnings, no library logs, and stdout/stderr to /dev/null.

    Decoders are C libraries that may print what they like to file
    descriptors 1 and 2; redirecting the descriptors (not just ``sys.stderr``)
    catches those too.
    """
    if verbose:
        return
    warnings.simplefilter("ignore")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
