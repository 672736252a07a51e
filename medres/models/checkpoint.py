"""Safetensors checkpoints that carry their model card, written atomically, never unpickled.

A checkpoint is one ``.safetensors`` file: the state dict plus string metadata
holding the card as JSON, so ``load_checkpoint(path)`` can rebuild the
architecture by name and restore trained thresholds without any side file.

Loading decides by the file's first bytes, before any parser runs, that it is
a safetensors file: a pickle (or ``torch.save``'s zip, which wraps a pickle)
can execute code while it loads, so it is refused outright (``unsafe_checkpoint``)
whatever its name; anything else that is not safetensors (a text file, an
image) is ``not_safetensors``.

Writing is deterministic: the same weights and card give byte-identical files
(the header's JSON is rewritten with sorted keys), so a file's SHA-256 names
its content and a rewrite of unchanged content changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickletools
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from medres import __version__ as MEDRES_VERSION
from medres.atomic import write_with_atomically
from medres.errors import (
    CheckpointMismatchError,
    CorruptError,
    InvalidModelCardError,
    NotFoundError,
    NotSafetensorsError,
    TruncatedError,
    UnknownModelError,
    UnsafeCheckpointError,
    UsageError,
)
from medres.models.card import ModelCard
from medres.models.registry import attach_card, create_model

LOGGER = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "medres-checkpoint-v1"
FORMAT_KEY, CARD_KEY, ALIASES_KEY, VERSION_KEY = "format", "medres_card", "medres_aliases", "medres_version"
RESERVED_METADATA_KEYS = frozenset({FORMAT_KEY, CARD_KEY, ALIASES_KEY, VERSION_KEY})
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

StrPath = str | PathLike[str]


@dataclass(frozen=True)
class LoadReport:
    """How a checkpoint's tensors matched a model's state dict.

    Attributes:
        loaded_keys: Keys present in both with equal shapes (the ones loaded).
        missing_keys: Model keys the checkpoint lacks.
        unexpected_keys: Checkpoint keys the model lacks.
        shape_mismatches: ``(key, checkpoint_shape, model_shape)`` for keys in both.
    """

    loaded_keys: tuple[str, ...]
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]
    shape_mismatches: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]

    @property
    def is_exact(self) -> bool:
        """True when every tensor matched, i.e. a strict load succeeds."""
        return not (self.missing_keys or self.unexpected_keys or self.shape_mismatches)

    def describe(self) -> str:
        """Every mismatch, grouped, one group per line."""
        lines = []
        if self.missing_keys:
            lines.append(f"missing from the checkpoint ({len(self.missing_keys)}): {', '.join(self.missing_keys)}")
        if self.unexpected_keys:
            lines.append(f"not in the model ({len(self.unexpected_keys)}): {', '.join(self.unexpected_keys)}")
        if self.shape_mismatches:
            shapes = ", ".join(
                f"{key} checkpoint {tuple(saved)} vs model {tuple(wanted)}"
                for key, saved, wanted in self.shape_mismatches
            )
            lines.append(f"shape mismatches ({len(self.shape_mismatches)}): {shapes}")
        return "\n".join(lines) if lines else "all tensors match"


def save_checkpoint(
    model: nn.Module,
    path: StrPath,
    card: ModelCard | None = None,
    extra_metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the model's weights and card to one ``.safetensors`` file, atomically.

    The file appears complete or not at all: it is written to a temporary file
    in the same folder, fsynced, renamed over ``path`` and the folder fsynced,
    so a crash mid-write leaves any previous checkpoint intact.

    Args:
        model: The model; its state dict is saved (tied tensors once).
        path: Destination file; its folder is created if needed.
        card: The card to store; defaults to ``model.card`` (e.g. replace it to
            store trained thresholds or a training-data fingerprint).
        extra_metadata: More string metadata (e.g. epoch, metrics as JSON).

    Returns:
        The path written.
    """
    card = card if card is not None else getattr(model, "card", None)
    if not isinstance(card, ModelCard):
        raise UsageError("a checkpoint needs a model card: pass card= or use a model from create_model()")
    tensors, aliases = _deduplicated_tensors(model.state_dict())
    metadata = _checkpoint_metadata(card, aliases, extra_metadata or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, tensors, metadata)
    return path


def load_checkpoint(path: StrPath, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a medres checkpoint: architecture by name, weights, card.

    Args:
        path: A ``.safetensors`` file written by :func:`save_checkpoint`.
        map_location: Device the returned model lives on.

    Returns:
        The model in eval mode, with the file's card (trained thresholds
        included) as ``model.card``.

    Raises:
        UnsafeCheckpointError: The file is a pickle or a ``torch.save`` zip; it
            is not parsed further.
        NotSafetensorsError: Anything else that is not safetensors (e.g. a text file).
        TruncatedError, CorruptError: The file is cut short or damaged.
        InvalidModelCardError: No usable card in the metadata.
        UnknownModelError: The card names a model this medres does not register.
        CheckpointMismatchError: The weights do not fit the architecture, or were trained for
            another revision of it (see ``ModelCard.architecture_revision``).
    """
    path = Path(path)
    metadata = _read_metadata(path)
    card = _card_from_metadata(metadata, path)
    try:
        model = create_model(card.name, labels=card.labels, in_channels=card.in_channels)
    except UnknownModelError as error:
        raise UnknownModelError(
            f"the checkpoint's card names a model this medres does not register (a newer medres, or a "
            f"plugin that is not imported?): {error.detail}",
            path=path,
        ) from None
    _refuse_other_revision(model.card, card, path)
    _load_state(model, _read_tensors(path, metadata), strict=True, path=path)
    attach_card(model, card)
    return model.to(map_location).eval()


def _refuse_other_revision(built: ModelCard, stored: ModelCard, path: Path) -> None:
    """Weights trained for another revision of the architecture would load and compute something else."""
    if built.architecture_revision == stored.architecture_revision:
        return
    advice = ("upgrade medres" if stored.architecture_revision > built.architecture_revision else
              f"retrain with this medres, or run the checkpoint with medres {stored.medres_version} that wrote it")
    raise CheckpointMismatchError(
        f"the weights were trained for revision {stored.architecture_revision} of {stored.name!r} and this medres "
        f"builds revision {built.architecture_revision}: the tensors fit, but the network computes differently; "
        f"{advice}",
        path=path,
    )


def load_weights(model: nn.Module, path: StrPath, strict: bool = True) -> LoadReport:
    """Load a safetensors state dict into an existing model (``--init PATH``).

    Unlike ``nn.Module.load_state_dict``, shapes are compared before anything
    is copied and every problem is reported at once, so a wrong architecture
    or head size is diagnosed in one go.

    Args:
        model: The model to fill; its card is left as is.
        path: Any safetensors file holding a state dict (a medres checkpoint or
            converted third-party weights).
        strict: Refuse any missing, unexpected or mis-shaped tensor. When False,
            load the tensors that match (e.g. a backbone under a new head).

    Returns:
        What matched and what did not.

    Raises:
        CheckpointMismatchError: ``strict`` and something did not match; the
            message lists every missing key, unexpected key and shape mismatch.
    """
    path = Path(path)
    metadata = _read_metadata(path)
    return _load_state(model, _read_tensors(path, metadata), strict=strict, path=path)


def read_card(path: StrPath) -> ModelCard:
    """The model card stored in a checkpoint, read from its header alone (no weights, no model)."""
    path = Path(path)
    return _card_from_metadata(_read_metadata(path), path)


def check_safetensors_file(path: StrPath) -> None:
    """Prove from its header alone that a file is a complete safetensors file; nothing is unpickled.

    The check ``medres`` runs on every checkpoint argument before any work, so
    a text file, a pickle or a half-copied file is refused at once, by name.

    Raises:
        NotFoundError: The file cannot be opened.
        UnsafeCheckpointError: A pickle or a ``torch.save`` zip.
        NotSafetensorsError: Anything else that does not start like safetensors.
        TruncatedError, CorruptError: Cut short or damaged.
    """
    _read_metadata(Path(path))


def checkpoint_sha256(path: StrPath) -> str:
    """Hex SHA-256 of the file's bytes, for provenance tables and run logs."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError as error:
        raise NotFoundError(f"cannot open ({error.strerror or error})", path=path) from error


def write_safetensors_atomically(
    path: StrPath, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write any named tensors (e.g. a resume state) to one safetensors file, atomically.

    Each tensor is stored as its own contiguous CPU copy, so tensors that share
    memory (which safetensors refuses) are simply stored in full; use
    :func:`save_checkpoint` for models, which stores tied weights once.

    Args:
        path: Destination file; its folder is created if needed.
        tensors: Name -> tensor, on any device.
        metadata: String metadata for the header.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    copies = {name: _private_cpu_copy(tensor) for name, tensor in tensors.items()}
    _write_atomically(path, copies, dict(metadata or {}))
    return path


def _private_cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor sharing memory with nothing (safetensors refuses shared memory)."""
    return tensor.detach().to("cpu", copy=True).contiguous()


def _deduplicated_tensors(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Private contiguous CPU copies, plus ``{tied name: stored name}``.

    safetensors refuses tensors that share memory. Names for the very same
    tensor (weight tying) are stored once and restored on load; copying every
    tensor also separates distinct views into one storage.
    """
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name_of: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        identity = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and identity in first_name_of:
            aliases[name] = first_name_of[identity]
        else:
            first_name_of[identity] = name
            stored[name] = _private_cpu_copy(tensor)
    return stored, aliases


def _checkpoint_metadata(card: ModelCard, aliases: dict[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    clashing = sorted(RESERVED_METADATA_KEYS & set(extra))
    if clashing:
        raise UsageError(f"extra_metadata cannot set the reserved keys {', '.join(clashing)}")
    not_strings = sorted(key for key, value in extra.items() if not (isinstance(key, str) and isinstance(value, str)))
    if not_strings:
        raise UsageError(f"safetensors metadata must be strings; encode {', '.join(map(str, not_strings))} as JSON")
    metadata = {**extra, FORMAT_KEY: CHECKPOINT_FORMAT, CARD_KEY: card.to_json(), VERSION_KEY: MEDRES_VERSION}
    if aliases:
        metadata[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    return metadata


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Temp file in the same folder -> canonical header -> fsync -> ``os.replace`` -> fsync the folder."""

    def write(temporary: Path) -> None:
        save_file(tensors, temporary, metadata=metadata)
        _canonicalize_header(temporary)

    write_with_atomically(path, write)


def _canonicalize_header(path: Path) -> None:
    """Rewrite a safetensors header as JSON with sorted keys, so equal content gives equal bytes.

    The safetensors library keeps the metadata in a hash map, whose order
    changes from one write to the next; the tensors' order and offsets do not.
    The canonical JSON is the library's compact JSON with its keys in another
    order, so it fits in the header's place exactly (padded with spaces, as the
    library pads). Should a future library write it otherwise, the valid file
    is kept as written and a warning says it is not canonical.
    """
    with open(path, "r+b") as stream:
        header_length = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(header_length))
        canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canonical) > header_length:
            LOGGER.warning("%s: the safetensors header could not be sorted in place; the file is valid, but "
                           "rewriting the same content may change its SHA-256", path)
            return
        stream.seek(8)
        stream.write(canonical.ljust(header_length, b" "))


def _read_safetensors_header(path: Path) -> dict[str, Any]:
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


def _read_metadata(path: Path) -> dict[str, str]:
    """The header's string-to-string ``__metadata__`` (empty when absent)."""
    metadata = _read_safetensors_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(value, str) for value in metadata.values()):
        raise CorruptError("the safetensors metadata is not a mapping of strings", path=path)
    return metadata


def _header_length_from_first_bytes(head: bytes, size: int, path: Path) -> int:
    """The header length, after refusing pickles, zips and anything else that does not start like safetensors.

    The safetensors layout is tested first: its little-endian length itself
    starts with a pickle's 0x80 opcode whenever the header is 128 bytes past a
    multiple of 256 long. Real pickles fail that test (their first 8 bytes
    read as a length far beyond any header, or byte 8 is not ``{``), and
    nothing is ever unpickled either way.
    """
    header_length = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if not (2 <= header_length <= SAFETENSORS_MAX_HEADER_BYTES and head[8:9] == b"{"):
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


def _card_from_metadata(metadata: Mapping[str, str], path: Path) -> ModelCard:
    file_format = metadata.get(FORMAT_KEY, "")
    if file_format.startswith("medres-checkpoint-") and file_format != CHECKPOINT_FORMAT:
        raise InvalidModelCardError(
            f"the checkpoint format {file_format!r} is newer than this medres ({MEDRES_VERSION}) reads; "
            "upgrade medres",
            path=path,
        )
    if CARD_KEY not in metadata:
        raise InvalidModelCardError(
            "the file holds no medres model card (a bare safetensors state dict?); "
            "load it into a model from create_model(name) with load_weights(model, path)",
            path=path,
        )
    try:
        return ModelCard.from_json(metadata[CARD_KEY])
    except InvalidModelCardError as error:
        raise InvalidModelCardError(error.detail, path=path) from None


def _read_tensors(path: Path, metadata: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """The state dict on CPU, with tied names restored from the alias table."""
    try:
        tensors = load_file(path, device="cpu")
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
        for alias, stored_name in aliases.items():
            tensors[alias] = tensors[stored_name]
    except (SafetensorError, OSError, ValueError, KeyError, AttributeError) as error:
        raise CorruptError(f"the tensors cannot be read ({error})", path=path) from None
    return tensors


def _load_state(model: nn.Module, tensors: dict[str, torch.Tensor], strict: bool, path: Path) -> LoadReport:
    report = compare_state_dicts(model.state_dict(), tensors)
    if strict and not report.is_exact:
        model_name = getattr(getattr(model, "card", None), "name", type(model).__name__)
        raise CheckpointMismatchError(
            f"the checkpoint does not fit model {model_name!r}:\n{report.describe()}\n"
            "(load_weights(..., strict=False) loads only the matching tensors)",
            path=path,
        )
    model.load_state_dict({key: tensors[key] for key in report.loaded_keys}, strict=strict)
    return report


def compare_state_dicts(
    model_state: Mapping[str, torch.Tensor], checkpoint: Mapping[str, torch.Tensor]
) -> LoadReport:
    """Match a checkpoint's tensors to a model's state dict by key and shape, loading nothing."""
    shape_mismatches = tuple(
        (key, tuple(checkpoint[key].shape), tuple(model_state[key].shape))
        for key in model_state
        if key in checkpoint and checkpoint[key].shape != model_state[key].shape
    )
    mismatched = {key for key, _, _ in shape_mismatches}
    return LoadReport(
        loaded_keys=tuple(key for key in model_state if key in checkpoint and key not in mismatched),
        missing_keys=tuple(key for key in model_state if key not in checkpoint),
        unexpected_keys=tuple(key for key in checkpoint if key not in model_state),
        shape_mismatches=shape_mismatches,
    )
