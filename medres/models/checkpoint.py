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
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

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
    UnknownModelError,
    UsageError,
)
from medres.io.safetensors_header import check_safetensors_file  # noqa: F401  (re-exported: the light check)
from medres.io.safetensors_header import read_metadata as _read_metadata
from medres.models.card import ModelCard
from medres.models.registry import attach_card, create_model

LOGGER = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "medres-checkpoint-v1"
FORMAT_KEY, CARD_KEY, ALIASES_KEY, VERSION_KEY = "format", "medres_card", "medres_aliases", "medres_version"
RESERVED_METADATA_KEYS = frozenset({FORMAT_KEY, CARD_KEY, ALIASES_KEY, VERSION_KEY})

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
