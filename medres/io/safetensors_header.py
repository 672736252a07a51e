"""Proof from its first bytes that a file is a complete safetensors file, with nothing unpickled.

Every command checks its checkpoint arguments with :func:`check_safetensors_file`
before any work (:mod:`medres.cli.inputs`), and :mod:`medres.models.checkpoint`
reads every checkpoint's header through :func:`read_metadata` before it loads
a tensor. This module needs only the standard library, so a wrong checkpoint
argument is refused without importing torch or MONAI.

A pickle (or ``torch.save``'s zip, which wraps a pickle) can execute code
while it loads, so it is refused outright (``unsafe_checkpoint``) whatever its
name; anything else that is not safetensors (a text file, an image) is
``not_safetensors``; a file cut short is ``truncated``.
"""

from __future__ import annotations

import io
import json
import pickletools
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, NoReturn

from medres.errors import CorruptError, NotFoundError, NotSafetensorsError, TruncatedError, UnsafeCheckpointError

SAFETENSORS_MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers
PICKLE_PROTOCOL_OPCODE = b"\x80"  # first byte of every pickle of protocol >= 2 (torch.save legacy too)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format: a zip around a pickle
CONVERSION_ADVICE = (
    "convert a file you trust with torch.load(path, weights_only=True) and medres.models.save_checkpoint "
    "(README, 'Checkpoints')"
)
PICKLE_SNIFF_BYTES = 65_536  # enough of a protocol 0/1 pickle to recognise its opcodes
PICKLE_MIN_OPCODES = 16  # text rarely parses as more than a few opcodes in a row
TEXT_BYTES = frozenset(b"\t\n\r") | frozenset(range(0x20, 0x7F))


def check_safetensors_file(path: str | PathLike[str]) -> None:
    """Prove from its header alone that a file is a complete safetensors file; nothing is unpickled.

    The check ``medres`` runs on every checkpoint argument before any work, so
    a text file, a pickle or a half-copied file is refused at once, by name.

    Raises:
        NotFoundError: The file cannot be opened.
        UnsafeCheckpointError: A pickle or a ``torch.save`` zip.
        NotSafetensorsError: Anything else that does not start like safetensors.
        TruncatedError, CorruptError: Cut short or damaged.
    """
    read_metadata(Path(path))


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header, after proving by the first bytes that this is safetensors.

    Layout: 8-byte little-endian header length N, N bytes of JSON starting with
    ``{``, then the tensor bytes the header's offsets must exactly cover.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(9)
            header_length = _header_length_from_first_bytes(head, size, path)
            header_bytes = head[8:] + stream.read(header_length - 1)
    except OSError as error:
        raise NotFoundError(f"cannot open ({error.strerror or error})", path=path) from error
    try:
        header = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptError(f"the safetensors header is not valid JSON ({error})", path=path) from None
    if not isinstance(header, dict):
        raise CorruptError("the safetensors header is not a JSON object", path=path)
    _check_data_size(header, data_size=size - 8 - header_length, path=path)
    return header


def read_metadata(path: Path) -> dict[str, str]:
    """The header's string-to-string ``__metadata__`` (empty when absent)."""
    metadata = read_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise CorruptError("the safetensors metadata is not a mapping of strings", path=path)
    return metadata


def safetensors_header_length(head: bytes) -> int | None:
    """The header length a file's first 9 bytes declare, if they start like safetensors; else None.

    Safetensors starts with its header's length (8 bytes, little-endian, at
    most :data:`SAFETENSORS_MAX_HEADER_BYTES`) and the header's opening ``{``.
    """
    header_length = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    return header_length if 2 <= header_length <= SAFETENSORS_MAX_HEADER_BYTES and head[8:9] == b"{" else None


def _header_length_from_first_bytes(head: bytes, size: int, path: Path) -> int:
    """The header length, after refusing pickles, zips and anything else that does not start like safetensors.

    The safetensors layout is tested first: its little-endian length itself
    starts with a pickle's 0x80 opcode whenever the header is 128 bytes past a
    multiple of 256 long. Real pickles fail that test (their first 8 bytes
    read as a length far beyond any header, or byte 8 is not ``{``), and
    nothing is ever unpickled either way.
    """
    header_length = safetensors_header_length(head)
    if header_length is None:
        _refuse_as_not_safetensors(head, size, path)
    if 8 + header_length > size:
        raise TruncatedError(
            f"the safetensors header declares {header_length} bytes but the file has only {size}; "
            "it was cut short (an interrupted copy?) - copy it again",
            path=path,
        )
    return header_length


def _refuse_as_not_safetensors(head: bytes, size: int, path: Path) -> NoReturn:
    """Say what a file that does not start like safetensors is instead: a pickle, a zip, cut short, or other."""
    if head.startswith(ZIP_MAGIC):
        raise UnsafeCheckpointError(
            f"a torch.save zip (.pt/.pth) around a pickle, which can run code when loaded, so medres never "
            f"loads it; {CONVERSION_ADVICE}",
            path=path,
        )
    if _is_pickle(path, size):
        raise UnsafeCheckpointError(
            f"a Python pickle (.pt/.pth), which can run code when loaded, so medres never loads it; "
            f"{CONVERSION_ADVICE}",
            path=path,
        )
    if _could_be_cut_safetensors(head):
        raise TruncatedError(f"the file has only {size} bytes, fewer than any safetensors file", path=path)
    looks_like = "a text file" if set(head) <= TEXT_BYTES else "no safetensors header"
    raise NotSafetensorsError(
        f"not a safetensors checkpoint ({looks_like}); give a .safetensors file written by `medres train`",
        path=path,
    )


def _is_pickle(path: Path, size: int) -> bool:
    """True when the file's first bytes are pickle opcodes (read by ``pickletools``, which runs nothing).

    Protocols 2 and later start with the 0x80 opcode; protocols 0 and 1 are
    recognised by their opcodes parsing up to ``STOP``, or for a long file,
    by the first :data:`PICKLE_SNIFF_BYTES` parsing as many opcodes.
    """
    with open(path, "rb") as stream:
        prefix = stream.read(PICKLE_SNIFF_BYTES)
    if prefix.startswith(PICKLE_PROTOCOL_OPCODE):
        return True
    parsed = 0
    try:
        for opcode, _argument, _position in pickletools.genops(io.BytesIO(prefix)):
            if opcode.name == "STOP":
                return True
            parsed += 1
    except Exception:  # noqa: BLE001  pickletools raises assorted errors where the bytes are not opcodes
        return size > len(prefix) and parsed >= PICKLE_MIN_OPCODES
    return False


def _could_be_cut_safetensors(head: bytes) -> bool:
    """True for the first bytes of a safetensors file cut short before its header's ``{``.

    The 8-byte little-endian header length of any real file is below 2**32, so
    its bytes 4 to 7 are zero; a text file of five characters or more is not
    mistaken for a truncated checkpoint.
    """
    return len(head) < 9 and not any(head[4:8])


def _check_data_size(header: Mapping[str, Any], data_size: int, path: Path) -> None:
    try:
        data_end = max(
            (int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"), default=0
        )
    except (TypeError, KeyError, IndexError, ValueError):
        raise CorruptError("the safetensors header has malformed tensor entries", path=path) from None
    if data_end > data_size:
        raise TruncatedError(
            f"the tensors need {data_end} bytes of data but the file holds {data_size}; "
            "it was cut short (an interrupted copy?) - copy it again",
            path=path,
        )
    if data_end < data_size:
        raise CorruptError(f"{data_size - data_end} bytes follow the last tensor; the file is damaged", path=path)


__all__ = ["CONVERSION_ADVICE", "PICKLE_PROTOCOL_OPCODE", "ZIP_MAGIC", "check_safetensors_file", "read_header",
           "read_metadata", "safetensors_header_length"]
