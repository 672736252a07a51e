"""Where a training run's weights start: ImageNet, a published or medres file, or nothing (``--init``).

``medres train cxr --init imagenet|none|FILE`` and ``medres train vol --init
FILE`` resolve here, so every training task starts the same way:

* ``imagenet`` takes torchvision's published ImageNet file for the model
  (:data:`IMAGENET_WEIGHTS`: the file torchvision's ``weights="DEFAULT"``
  downloads) from the torch hub cache, ``$TORCH_HOME/hub/checkpoints/`` (by
  default ``~/.cache/torch/hub/checkpoints/``), where torchvision itself keeps
  it. When it is not there it is downloaded there, its SHA-256 checked against
  the prefix in its name as torchvision checks it; offline (or with
  ``MEDRES_OFFLINE=1``, which never tries) the run stops with
  ``pretrained_weights_missing``, naming the file, its URL and the folder to
  put it in. Nothing falls back to random weights.
* ``FILE`` is any file ``medres import-weights`` reads, its format told from
  its keys (a torchvision or timm state dict, a torchxrayvision release, a
  MedicalNet file: fitted as the import fits them, read without running any
  pickle), or a medres checkpoint (loaded as it is).
* ``none`` keeps the registry model's random initialisation.

The CheXNet-recipe models start from ImageNet by default, as CheXNet does;
the others (``chexnet_tiny``, ``chexnet_preact_resnet50``, the 3D models)
from ``none`` (:func:`default_initialisation`). The card of a run started
from published weights records them in ``card.extra["pretrained"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medres.errors import (
    CheckpointMismatchError,
    NotFoundError,
    PretrainedWeightsMissingError,
    UsageError,
    library_message,
)
from medres.models.card import TORCHXRAYVISION_NORMALIZATION
from medres.models.checkpoint import checkpoint_sha256, load_weights
from medres.models.pretrained.importers import detect_source, fit_pretrained_tensors, read_weights_file
from medres.models.pretrained.key_maps import PREACT_EXPLANATION, detect_architecture, to_medres_layout
from medres.models.pretrained.published import PublishedModel, published_model
from medres.models.registry import attach_card

IMAGENET = "imagenet"
NONE = "none"
INIT_KEYWORDS: tuple[str, ...] = (IMAGENET, NONE)
OFFLINE_VARIABLE = "MEDRES_OFFLINE"
"""Set to 1 to never download: a missing ImageNet file then stops the run at once (tests, air-gapped sites)."""
TORCHVISION_DOWNLOADS = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class ImagenetWeights:
    """torchvision's published ImageNet file for one medres model.

    Attributes:
        model: The medres registry model the file fills.
        weights: torchvision's name for the weights (``weights="DEFAULT"`` resolves to it).
        file_name: The file's name, in the download URL and in the torch hub cache;
            the part after the last ``-`` is the start of its SHA-256.
    """

    model: str
    weights: str
    file_name: str

    @property
    def url(self) -> str:
        """Where torchvision downloads the file from."""
        return TORCHVISION_DOWNLOADS + self.file_name

    @property
    def hash_prefix(self) -> str:
        """The start of the file's SHA-256, as ``torch.hub.load_state_dict_from_url(check_hash=True)`` reads it."""
        return Path(self.file_name).stem.rsplit("-", 1)[1]


IMAGENET_WEIGHTS: dict[str, ImagenetWeights] = {weights.model: weights for weights in (
    ImagenetWeights("chexnet_densenet121", "DenseNet121_Weights.IMAGENET1K_V1", "densenet121-a639ec97.pth"),
    ImagenetWeights("chexnet_resnet50", "ResNet50_Weights.IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    ImagenetWeights("chexnet_resnet101", "ResNet101_Weights.IMAGENET1K_V2", "resnet101-cd907fc2.pth"),
    ImagenetWeights("chexnet_resnet152", "ResNet152_Weights.IMAGENET1K_V2", "resnet152-f82ba261.pth"),
    ImagenetWeights("chexnet_wide_resnet50", "Wide_ResNet50_2_Weights.IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth"),
)}
"""Registry model -> torchvision's DEFAULT ImageNet weights (torchvision 0.13 and later) for the same network."""


def default_initialisation(model_name: str) -> str:
    """``imagenet`` for the CheXNet-recipe models (torchvision publishes their weights), else ``none``."""
    return IMAGENET if model_name in IMAGENET_WEIGHTS else NONE


def hub_checkpoint_folder() -> Path:
    """``$TORCH_HOME/hub/checkpoints``: where torchvision (``torch.hub``) caches published weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    """Whether downloads are off (``MEDRES_OFFLINE`` set to anything but ``""``/``0``)."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip() not in ("", "0")


def imagenet_weights(model_name: str) -> ImagenetWeights:
    """The torchvision file for ``model_name``.

    Raises:
        UsageError: torchvision publishes no ImageNet weights for this model.
    """
    if model_name in IMAGENET_WEIGHTS:
        return IMAGENET_WEIGHTS[model_name]
    reason = "torchvision publishes no ImageNet weights for it"
    if model_name == "chexnet_preact_resnet50":
        reason = f"torchvision publishes no pre-activation ResNet-50, and {PREACT_EXPLANATION}"
    raise UsageError(f"--init imagenet does not apply to {model_name!r}: {reason}. Models with ImageNet weights: "
                     f"{', '.join(IMAGENET_WEIGHTS)}; or pass --init none (random weights) or --init FILE")


def imagenet_weights_file(model_name: str, progress: bool = True) -> Path:
    """torchvision's ImageNet file for the model, from the torch hub cache, downloaded there if need be.

    A cached file is taken as it is (as torchvision takes it); a download is
    written to a temporary file, checked against the SHA-256 prefix in its
    name, and only then moved into the cache.

    Raises:
        UsageError: No ImageNet weights are published for the model.
        PretrainedWeightsMissingError: The file is not cached and cannot be
            downloaded (offline, ``MEDRES_OFFLINE=1``, or a failed hash check).
    """
    published = imagenet_weights(model_name)
    target = hub_checkpoint_folder() / published.file_name
    if target.is_file():
        return target
    if offline():
        raise _missing(published, target, f"not downloaded: {OFFLINE_VARIABLE} is set")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(published.url, str(target), hash_prefix=published.hash_prefix,
                                       progress=progress)
    except (OSError, RuntimeError) as error:  # URLError and timeouts are OSErrors; a wrong hash is a RuntimeError
        raise _missing(published, target, f"the download failed: {library_message(error)}") from None
    return target


def _missing(published: ImagenetWeights, target: Path, why: str) -> PretrainedWeightsMissingError:
    return PretrainedWeightsMissingError(
        f"ImageNet weights for {published.model} ({published.weights}) are not in the torch hub cache and {why}. "
        f"Download {published.url} on a machine that is online and put it at {target} (the folder is "
        f"$TORCH_HOME/hub/checkpoints, ~/.cache/torch/hub/checkpoints by default), or pass --init none to train "
        f"from random weights")


def resolve_initialisation(spec: str | None, model_name: str, progress: bool = True) -> str:
    """The ``--init`` a run records, checked now, before any data is read.

    Args:
        spec: ``imagenet``, ``none``, a file, or None for the model's default.
        model_name: The registry model the run trains.
        progress: Show a progress bar while the ImageNet file downloads.

    Returns:
        ``imagenet``, ``none`` or the file as given. For ``imagenet`` the file is
        then in the torch hub cache (downloaded if need be).

    Raises:
        UsageError, PretrainedWeightsMissingError: As :func:`imagenet_weights_file`.
        NotFoundError: The file does not exist.
        UnsafeCheckpointError, CorruptError: The file is not weights that can be
            read without running code.
    """
    spec = default_initialisation(model_name) if spec is None else str(spec)
    if spec == IMAGENET:
        imagenet_weights_file(model_name, progress)
    elif spec != NONE:
        _existing_file(spec)
        detect_source(spec)
    return spec


def initialise_weights(model: nn.Module, spec: str | PathLike[str] | None,
                       strict: bool = True) -> dict[str, Any] | None:
    """Fill a freshly built registry model with the weights ``spec`` names; record them on its card.

    Args:
        model: The model as ``create_model`` built it for the run (its card's
            labels, channels and input size are the run's).
        spec: ``imagenet``, ``none`` (or None: nothing to do), or a file.
        strict: For a medres checkpoint only: refuse any missing or unexpected
            tensor (False loads the tensors that match, e.g. a backbone under a
            new head). Published files are always fitted strictly but for their head.

    Returns:
        What ``card.extra["pretrained"]`` now records (source, file, SHA-256, what
        was done to the first convolution and the head), or None when nothing
        was loaded or the file was a medres checkpoint (whose card stays as built).

    Raises:
        CheckpointMismatchError: The weights are for another architecture or do not fit.
        UsageError, PretrainedWeightsMissingError, NotFoundError, UnsafeCheckpointError,
            CorruptError: As :func:`resolve_initialisation`.
    """
    if spec is None or str(spec) == NONE:
        return None
    if str(spec) == IMAGENET:
        published = imagenet_weights(model.card.name)
        path = imagenet_weights_file(model.card.name)
        provenance = _fit_published_file(model, path, "torchvision")
        provenance.update(init=IMAGENET, weights=published.weights, url=published.url)
    else:
        path = _existing_file(spec)
        source = detect_source(path)
        if source == "medres":
            load_weights(model, path, strict=strict)
            return None
        provenance = _fit_published_file(model, path, source)
    attach_card(model, model.card.with_overrides(extra={**model.card.extra, "pretrained": provenance}))
    return provenance


def _existing_file(spec: str | PathLike[str]) -> Path:
    path = Path(spec)
    if not path.is_file():
        raise NotFoundError("no such weights file (given as --init; or use imagenet or none)", path=path)
    return path


def _fit_published_file(model: nn.Module, path: Path, source: str) -> dict[str, Any]:
    """A published file's tensors fitted to the run's model as ``import-weights`` fits them."""
    tensors = to_medres_layout(read_weights_file(path, source))
    _refuse_other_architecture(tensors, model.card.name, path)
    release = _recognised_release(path) if source == "torchxrayvision" else None
    _, notes = fit_pretrained_tensors(model, tensors, release.outputs if release else None)
    provenance: dict[str, Any] = {"source": source, "file": path.name, "sha256": checkpoint_sha256(path), **notes}
    if source == "torchxrayvision":
        # The weights expect torchxrayvision's intensities; the run's own crop and sizes stay as the data has them.
        attach_card(model, model.card.with_overrides(normalization=dict(TORCHXRAYVISION_NORMALIZATION)))
        provenance["normalization"] = "torchxrayvision's (8-bit image scaled to [-1024, 1024]), as the weights expect"
        if release is not None:
            provenance["variant"] = release.variant
    return provenance


def _refuse_other_architecture(tensors: Mapping[str, torch.Tensor], model_name: str, path: Path) -> None:
    """A file for another registered architecture is named as such, instead of listing hundreds of mismatches."""
    try:
        held = detect_architecture(tensors)
    except (UsageError, CheckpointMismatchError):
        return  # not one of the published layouts: the fit lists what does not match
    if held != model_name:
        raise CheckpointMismatchError(f"the file holds {held} weights and the run trains {model_name}; pass "
                                      f"--model {held} to start from them", path=path)


def _recognised_release(path: Path) -> PublishedModel | None:
    """The torchxrayvision release a file is, when its name says (its head is then kept by label name)."""
    try:
        return published_model(None, path)
    except UsageError:
        return None
