"""Recognise a file's format by its content, never by its extension."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Literal

Format = Literal["dicom", "nifti", "png", "jpeg", "unknown"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
GZIP_MAGIC = b"\x1f\x8b"
NIFTI1_HEADER_SIZE, NIFTI2_HEADER_SIZE = 348, 540
# First groups a DICOM stream without preamble can start with (meta, identifying, ...).
PREAMBLELESS_FIRST_GROUPS = frozenset({0x0002, 0x0008})


def detect_format(path: Path) -> Format:
    """The format of the file at ``path`` from its first bytes."""
    head = _read_head(path, 544)
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(GZIP_MAGIC) and _is_nifti_header(_gunzip_head(path, 544)):
        return "nifti"
    if _is_dicom_head(head):
        return "dicom"
    return "unknown"


def looks_like_dicom(path: Path) -> bool:
    """True when the file has the 'DICM' marker or starts with a DICOM element header."""
    return _is_dicom_head(_read_head(path, 132))


def _is_dicom_head(head: bytes) -> bool:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    group_little, = struct.unpack("<H", head[:2])
    group_big, = struct.unpack(">H", head[:2])
    return group_little in PREAMBLELESS_FIRST_GROUPS or group_big in PREAMBLELESS_FIRST_GROUPS


def _is_nifti_header(head: bytes) -> bool:
    if len(head) < NIFTI1_HEADER_SIZE:
        return False
    for order in "<>":
        size, = struct.unpack(order + "i", head[:4])
        if size == NIFTI1_HEADER_SIZE and head[344:347] in (b"n+1", b"ni1"):
            return True
        if size == NIFTI2_HEADER_SIZE and head[4:7] in (b"n+2", b"ni2"):
            return True
    return False


def _read_head(path: Path, n_bytes: int) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(n_bytes)


def _gunzip_head(path: Path, n_bytes: int) -> bytes:
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(n_bytes)
    except (OSError, EOFError, zlib.error):
        return b""
