"""Import published weights (torchvision, timm, torchxrayvision, MedicalNet) into medres registry models.

One path for every source: read the file without running it, rename its
keys to medres's, fit the tensors to a fresh registry model, and describe
where they came from on the model card:

* reading: state-dict files with ``torch.load(weights_only=True)`` or
  safetensors; torchxrayvision's whole pickled modules with
  :mod:`medres.models.pretrained.safe_pickle`. A pickle that needs anything
  beyond tensors is refused (``unsafe_checkpoint``) and nothing from it runs;
* the first convolution of an RGB network becomes the 1-channel one by
  summing its kernel over the input channels (a gray image repeated to RGB
  gives the same output);
* the head is copied where the model's labels are outputs of the file (by
  name: torchxrayvision's findings, or ImageNet's classes when the ImageNet
  head is kept to verify an import), otherwise it stays as ``create_model``
  initialises it for training;
* every other tensor must fit exactly (batch-norm counters that old files
  lack excepted), so a wrong architecture is refused with every mismatch
  listed instead of loading half a network.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from medres.errors import (
    CheckpointMismatchError,
    CorruptError,
    NotFoundError,
    UnsafeCheckpointError,
    UsageError,
    library_message,
)
from medres.io.safetensors_header import PICKLE_PROTOCOL_OPCODE, ZIP_MAGIC, safetensors_header_length
from medres.models.card import TORCHXRAYVISION_NORMALIZATION, ModelCard
from medres.models.checkpoint import CARD_KEY, LoadReport, checkpoint_sha256, compare_state_dicts
from medres.models.pretrained import safe_pickle
from medres.models.pretrained.key_maps import detect_architecture, to_medres_layout
from medres.models.pretrained.published import PublishedModel, published_model
from medres.models.registry import attach_card, create_model, is_model, list_models

StrPath = str | PathLike[str]
SOURCES: tuple[str, ...] = ("torchvision", "timm", "torchxrayvision", "medicalnet")
IMAGENET_CLASSES = 1000
IMAGENET_LABELS: tuple[str, ...] = tuple(f"imagenet_{index:04d}" for index in range(IMAGENET_CLASSES))
"""Output names of a kept ImageNet head: the class index, as the published heads carry no names."""
INITIALISATION_SEED = 0  # the new head is the same for the same file, so an import is reproducible


def import_weights(path: StrPath, source: str, model: str | None = None, variant: str | None = None,
                   keep_imagenet_head: bool = False) -> nn.Module:
    """A registry model filled with a published file's weights, its card saying where they came from.

    Args:
        path: The published file: a torchvision ``.pth``, a timm ``.safetensors``
            or ``.bin``, a torchxrayvision release ``.pt``, a MedicalNet ``.pth``.
        source: One of :data:`SOURCES`.
        model: The registry model to fill; detected from the tensors when omitted
            (for torchxrayvision, the variant's architecture).
        variant: torchxrayvision only: the release (``densenet121-res224-nih`` ...);
            detected from the release file's name when omitted.
        keep_imagenet_head: torchvision/timm only: keep 3 input channels and the
            1000-class ImageNet head, to check the import against the source
            library's outputs (such a model is not a chest X-ray model).

    Returns:
        The model in eval mode; ``model.card.extra["pretrained"]`` records the
        source, the file's name and SHA-256, and what was done to the first
        convolution and the head. ``save_checkpoint(model, out)`` writes it.

    Raises:
        NotFoundError: The file does not exist.
        UnsafeCheckpointError: The file's pickle needs more than tensors (nothing from it was run).
        CorruptError: Not a weights file, or damaged.
        UsageError: Unknown source, model or variant, or an option that does not apply.
        CheckpointMismatchError: The tensors do not fit the model; every mismatch is listed.
    """
    path = Path(path)
    source = _checked_source(source, variant, keep_imagenet_head)
    if not path.is_file():
        raise NotFoundError("no such weights file", path=path)
    published = published_model(variant, path) if source == "torchxrayvision" else None
    tensors = to_medres_layout(read_weights_file(path, source))
    model_name = _model_name(model, published, tensors, source)
    network, source_labels = _fresh_model(model_name, published, keep_imagenet_head, tensors)
    _, provenance = fit_pretrained_tensors(network, tensors, source_labels)
    provenance = {"source": source, "file": path.name, "sha256": checkpoint_sha256(path), **provenance,
                  **({"variant": published.variant, "release_url": published.url} if published else {})}
    if published is not None and published.labels_without_threshold:
        provenance["labels_without_published_threshold"] = list(published.labels_without_threshold)
    card = network.card.with_overrides(extra={**network.card.extra, "pretrained": provenance})
    attach_card(network, card)
    return network.eval()


def read_weights_file(path: StrPath, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a published file by their original key names, read without running anything.

    Raises:
        UnsafeCheckpointError: The pickle needs more than tensors; nothing was run.
        CorruptError: Neither a ``torch.save`` file nor safetensors, or damaged.
    """
    path = Path(path)
    kind = _file_kind(path)
    if kind == "safetensors":
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CorruptError("the safetensors file cannot be read", path=path,
                               quoted=library_message(error)) from None
    if source == "torchxrayvision":
        return safe_pickle.load_tensors(path)
    return _state_dict_of(_load_weights_only(path, source), path)


def detect_source(path: StrPath) -> str:
    """Which source a weights file is laid out as, from its format and keys, without running it.

    Returns:
        ``"medres"`` for a medres checkpoint, ``"timm"`` for another safetensors
        file, ``"torchxrayvision"`` for a pickled module, ``"medicalnet"`` for a
        ``{"state_dict": ...}`` file or ``module.``-prefixed keys, else
        ``"torchvision"`` (a plain state dict; torchxrayvision's ResNet-50 file is
        one too, and reads the same way).

    Raises:
        UnsafeCheckpointError, CorruptError: As :func:`read_weights_file`.
    """
    path = Path(path)
    if _file_kind(path) == "safetensors":
        metadata = _safetensors_metadata(path)
        return "medres" if CARD_KEY in metadata else "timm"
    root = safe_pickle.load_object(path)
    if isinstance(root, safe_pickle.StandIn):
        return "torchxrayvision"
    if isinstance(root, Mapping) and isinstance(root.get("state_dict"), Mapping):
        return "medicalnet"
    keys = root.keys() if isinstance(root, Mapping) else ()
    return "medicalnet" if any(str(key).startswith("module.") for key in keys) else "torchvision"


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(path, "pt") as opened:
            return dict(opened.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptError("the safetensors file cannot be read", path=path, quoted=library_message(error)) from None


def fit_pretrained_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor],
                           source_labels: Sequence[str] | None = None) -> tuple[LoadReport, dict[str, Any]]:
    """Load tensors in medres's key names into ``model``: first conv adapted, head by label name.

    Args:
        model: A registry model with its card (its labels decide the head).
        tensors: The file's tensors, renamed by :func:`key_maps.to_medres_layout`.
        source_labels: The names of the file's head outputs, when known.

    Returns:
        What matched, and a note of what was done to the first convolution and the head.

    Raises:
        CheckpointMismatchError: Anything but the head (and missing batch-norm counters) does not fit.
    """
    state = dict(tensors)
    model_state = model.state_dict()
    conv_note = _adapt_first_convolution(state, model_state, _first_module_name(model, (nn.Conv2d, nn.Conv3d)))
    head = _last_module_name(model, nn.Linear)
    head_keys = {key for key in model_state if key.startswith(head + ".")}
    head_copied = _fit_head(state, head, model.card.labels, source_labels)
    report = compare_state_dicts(model_state, state)
    tolerated = {key for key in model_state if key.endswith(".num_batches_tracked")} | (
        set() if head_copied else head_keys)
    problems = dataclasses.replace(report, missing_keys=tuple(key for key in report.missing_keys
                                                              if key not in tolerated))
    if not problems.is_exact:
        raise CheckpointMismatchError(f"the weights do not fit model {model.card.name!r}:\n{problems.describe()}")
    model.load_state_dict({key: state[key] for key in report.loaded_keys}, strict=False)
    head_note = "copied from the file" if head_copied else "new, initialised as for training"
    return report, {"first_convolution": conv_note, "head": head_note}


def _checked_source(source: str, variant: str | None, keep_imagenet_head: bool) -> str:
    if source not in SOURCES:
        raise UsageError(f"unknown weights source {source!r}; choose one of: {', '.join(SOURCES)}")
    if variant is not None and source != "torchxrayvision":
        raise UsageError("--variant names a torchxrayvision release; it does not apply to " + source)
    if keep_imagenet_head and source not in ("torchvision", "timm"):
        raise UsageError("--keep-imagenet-head applies to ImageNet weights (torchvision, timm), not to " + source)
    return source


def _file_kind(path: Path) -> str:
    """``safetensors`` or ``torch`` (a zip or legacy ``torch.save`` file), from the first bytes alone.

    safetensors is tested first: its 8-byte little-endian header length starts
    with a pickle's 0x80 opcode whenever the header is 128 bytes past a multiple
    of 256 long, while a pickle's or zip's first bytes never read as a length
    that fits the file with a ``{`` after it.
    """
    with open(path, "rb") as stream:
        head = stream.read(9)
    header_length = safetensors_header_length(head)
    if header_length is not None and header_length <= path.stat().st_size - 8:
        return "safetensors"
    if head.startswith((ZIP_MAGIC, PICKLE_PROTOCOL_OPCODE)):
        return "torch"
    raise CorruptError("not a weights file: neither a torch.save file (.pth/.pt/.bin) nor safetensors", path=path)


def _load_weights_only(path: Path, source: str) -> Any:
    """``torch.load(weights_only=True)``: tensors and containers only; anything else is refused unread."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        hint = "; a torchxrayvision release file is read with --from torchxrayvision" if source != "torchxrayvision" \
            else ""
        refused = re.search(r"GLOBAL ([\w.]+)", str(error))
        raise UnsafeCheckpointError(
            f"the file's pickle holds more than tensors, so torch's weights-only loader refused it and nothing "
            f"from it was run{hint}", path=path,
            quoted=f"it names {refused[1]}" if refused else library_message(error)) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise CorruptError("the torch.save file cannot be read", path=path, quoted=library_message(error)) from None


def _state_dict_of(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded state dict, unwrapped from ``{"state_dict": ...}`` (MedicalNet's layout)."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise CorruptError(f"the file holds a {type(loaded).__name__}, not a state dict", path=path)
    tensors = {str(key): value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CorruptError("the file holds no tensors", path=path)
    return tensors


def _model_name(model: str | None, published: PublishedModel | None, tensors: Mapping[str, torch.Tensor],
                source: str) -> str:
    """The registry model to fill: as given, else the variant's architecture, else detected from the tensors."""
    name = model or (published.architecture if published else detect_architecture(tensors))
    if not is_model(name):
        raise UsageError(f"unknown model {name!r}; registered models are: {', '.join(list_models())}")
    wanted_task = "vol" if source == "medicalnet" else "cxr"
    if name not in list_models(wanted_task):
        raise UsageError(f"{source} weights go into {wanted_task!r} models ({', '.join(list_models(wanted_task))}), "
                         f"and {name!r} is not one")
    return name


def _fresh_model(name: str, published: PublishedModel | None, keep_imagenet_head: bool,
                 tensors: Mapping[str, torch.Tensor]) -> tuple[nn.Module, tuple[str, ...] | None]:
    """A new registry model with the card the import needs, and the names of the file's head outputs."""
    overrides: dict[str, Any] = {}
    source_labels: tuple[str, ...] | None = None
    if published is not None:
        resolution = published.input_resolution
        overrides = {"labels": published.labels, "thresholds": published.thresholds,
                     "input_size": (resolution, resolution), "normalization": dict(TORCHXRAYVISION_NORMALIZATION),
                     "crop": "center_square", "stored_size": resolution}
        source_labels = published.outputs
    elif keep_imagenet_head:
        overrides = {"labels": IMAGENET_LABELS, "in_channels": 3,
                     "extra": {"verification_only": "3-channel input and the 1000 ImageNet classes, kept to check "
                                                    "the import against the source library; not a chest X-ray model"}}
        source_labels = IMAGENET_LABELS if _head_rows(tensors) == IMAGENET_CLASSES else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INITIALISATION_SEED)
        return create_model(name, **overrides), source_labels


def _head_rows(tensors: Mapping[str, torch.Tensor]) -> int | None:
    for key in ("fc.weight", "class_layers.out.weight"):
        if key in tensors:
            return int(tensors[key].shape[0])
    return None


def _adapt_first_convolution(state: dict[str, torch.Tensor], model_state: Mapping[str, torch.Tensor],
                             convolution: str) -> str:
    """Sum an RGB first kernel over its input channels when the model takes one channel."""
    key = f"{convolution}.weight"
    if key not in state or key not in model_state:
        return "as published"
    given, wanted = state[key].shape, model_state[key].shape
    if given[1] != wanted[1] and wanted[1] == 1 and (given[0], *given[2:]) == (wanted[0], *wanted[2:]):
        state[key] = state[key].sum(dim=1, keepdim=True)
        return f"summed over its {given[1]} input channels"
    return "as published"


def _fit_head(state: dict[str, torch.Tensor], head: str, labels: Sequence[str],
              source_labels: Sequence[str] | None) -> bool:
    """Keep the file's head rows for the model's labels, by name; drop the head when they are not all there."""
    weight, bias = state.pop(f"{head}.weight", None), state.pop(f"{head}.bias", None)
    if weight is None or source_labels is None or not set(labels) <= set(source_labels):
        return False
    if weight.shape[0] != len(source_labels) or (bias is not None and bias.shape[0] != len(source_labels)):
        raise CheckpointMismatchError(f"the file's head has {weight.shape[0]} outputs where its release names "
                                      f"{len(source_labels)}; is it the release given as --variant?")
    rows = torch.tensor([list(source_labels).index(label) for label in labels])
    state[f"{head}.weight"] = weight.reshape(weight.shape[0], -1)[rows]
    if bias is not None:
        state[f"{head}.bias"] = bias[rows]
    return True


def _first_module_name(model: nn.Module, kind: type[nn.Module] | tuple[type[nn.Module], ...]) -> str:
    return next(name for name, module in model.named_modules() if isinstance(module, kind))


def _last_module_name(model: nn.Module, kind: type[nn.Module]) -> str:
    return [name for name, module in model.named_modules() if isinstance(module, kind)][-1]


def card_summary(card: ModelCard) -> str:
    """One line on what an imported model predicts and how it is fed, for the command's output."""
    provenance = card.extra.get("pretrained", {})
    return (f"{card.name} ({len(card.labels)} labels, input {card.in_channels}x"
            f"{'x'.join(map(str, card.input_size))}, normalization {card.normalization.get('kind', '?')}, "
            f"crop {card.crop}; first convolution {provenance.get('first_convolution', '?')}, head "
            f"{provenance.get('head', '?')})")
