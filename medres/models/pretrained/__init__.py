"""Published weights imported into medres models, with no code from any weights file ever run.

``import_weights(path, source)`` reads a torchvision, timm, torchxrayvision or
MedicalNet file and returns the registry model it fills, its card recording
the file's name and SHA-256 (and, for torchxrayvision, the release's labels,
thresholds, resolution and preprocessing); ``save_checkpoint`` then writes an
ordinary medres checkpoint. ``medres import-weights`` is the same on the
command line. ``initialise_weights(model, spec)`` starts a training run from
``imagenet`` (torchvision's file, from the torch hub cache), such a file, or
``none`` (``medres train --init``).
"""

from __future__ import annotations

from medres.models.pretrained.importers import (
    IMAGENET_LABELS,
    SOURCES,
    detect_source,
    fit_pretrained_tensors,
    import_weights,
    read_weights_file,
)
from medres.models.pretrained.initial import (
    IMAGENET_WEIGHTS,
    INIT_KEYWORDS,
    OFFLINE_VARIABLE,
    default_initialisation,
    imagenet_weights_file,
    initialise_weights,
    resolve_initialisation,
)
from medres.models.pretrained.key_maps import detect_architecture, to_medres_layout
from medres.models.pretrained.published import PUBLISHED_MODELS, PublishedModel, published_model
from medres.models.pretrained.safe_pickle import load_tensors as load_pickled_tensors

__all__ = [
    "IMAGENET_LABELS",
    "IMAGENET_WEIGHTS",
    "INIT_KEYWORDS",
    "OFFLINE_VARIABLE",
    "PUBLISHED_MODELS",
    "SOURCES",
    "PublishedModel",
    "default_initialisation",
    "detect_architecture",
    "detect_source",
    "fit_pretrained_tensors",
    "imagenet_weights_file",
    "import_weights",
    "initialise_weights",
    "load_pickled_tensors",
    "published_model",
    "read_weights_file",
    "resolve_initialisation",
    "to_medres_layout",
]
