"""Models by name, their cards, and safetensors checkpoints.

Importing this package registers every built-in architecture, so
``create_model(name)`` works for every name ``list_models()`` reports;
``import_weights`` fills one with published (ImageNet, torchxrayvision,
MedicalNet) weights.
"""

from __future__ import annotations

from medres.models import (
    classifiers,  # noqa: F401  (registers the CXR models)
    volumes,  # noqa: F401  (registers the 3D seg/vol models)
)
from medres.models.card import CXR14_LABELS, ModelCard
from medres.models.checkpoint import (
    LoadReport,
    checkpoint_sha256,
    compare_state_dicts,
    load_checkpoint,
    load_weights,
    read_card,
    save_checkpoint,
    write_safetensors_atomically,
)
from medres.models.classifiers import DEFAULT_CXR_MODEL
from medres.models.pretrained import PUBLISHED_MODELS, import_weights
from medres.models.registry import create_model, is_model, list_models, register_model

__all__ = [
    "CXR14_LABELS",
    "DEFAULT_CXR_MODEL",
    "PUBLISHED_MODELS",
    "LoadReport",
    "ModelCard",
    "checkpoint_sha256",
    "compare_state_dicts",
    "create_model",
    "import_weights",
    "is_model",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "read_card",
    "register_model",
    "save_checkpoint",
    "write_safetensors_atomically",
]
