"""Published weights imported into medres models, with no code from any weights file ever run.

``import_weights(path, source)`` reads a torchvision, timm, torchxrayvision or
MedicalNet file and returns the registry model it fills, its card recording
the file's name and SHA-256 (and, for torchxrayvision, the release's labels,
thresholds, resolution and preprocessing); ``save_checkpoint`` then writes an
ordinary medres checkpoint. ``medres import-weights`` is the same on the
command line.
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
from medres.models.pretrained.key_maps import detect_architecture, to_medres_layout
from medres.models.pretrained.published import PUBLISHED_MODELS, PublishedModel, published_model
from medres.models.pretrained.safe_pickle import load_tensors as load_pickled_tensors

__all__ = [
    "IMAGENET_LABELS",
    "PUBLISHED_MODELS",
    "SOURCES",
    "PublishedModel",
    "detect_architecture",
    "detect_source",
    "fit_pretrained_tensors",
    "import_weights",
    "load_pickled_tensors",
    "published_model",
    "read_weights_file",
    "to_medres_layout",
]
