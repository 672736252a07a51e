"""Model work for the review app: load a checkpoint, score a radiograph, explain one class.

Before the chest X-ray model sees an image, the scope gate of
:mod:`medres.models.scope` (the one ``medres score`` applies) decides whether
it may: a CT slice, a lateral or a knee film gets its reason and no
probabilities or Grad-CAM, here as in the batch scorer.

The loaded model is shared by every session (``st.cache_resource``), so each
use holds the model's lock: Grad-CAM installs a forward hook on the shared
network, and two sessions explaining at once would otherwise see each
other's activations.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medres.errors import MedresError, UsageError
from medres.explain import explain
from medres.inference import predict_batch
from medres.io import Image
from medres.models import checkpoint_sha256, load_checkpoint
from medres.models.card import ModelCard
from medres.models.scope import ImageFacts, check_chest_xray_scope, chest_xray_scope_error
from medres.transforms.cxr import preprocess_for_model

RESEARCH_NOTICE = "Research use only, not for diagnosis."


@dataclass
class LoadedModel:
    """A model ready for inference, with what the app shows about it.

    Attributes:
        model: The network in eval mode, ``model.card`` attached.
        checkpoint: Where it was loaded from.
        sha256: The checkpoint file's digest (shown, and written into the scores JSON).
        lock: Serialises use across sessions.
    """

    model: nn.Module
    checkpoint: Path
    sha256: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def card(self) -> ModelCard:
        return self.model.card


@dataclass(frozen=True)
class XrayScores:
    """One radiograph's probabilities, thresholds and calls in label order."""

    probabilities: dict[str, float]
    thresholds: dict[str, float]

    @property
    def calls(self) -> dict[str, bool]:
        return {label: value >= self.thresholds[label] for label, value in self.probabilities.items()}


def load_model(checkpoint: str | Path, task: str = "cxr") -> LoadedModel:
    """Load a safetensors checkpoint for ``task`` (``"cxr"`` or ``"seg"``), in eval mode.

    Raises:
        MedresError: The file is missing, unsafe (a pickle) or not a ``task`` model.
    """
    path = Path(checkpoint)
    model = load_checkpoint(path)
    if model.card.task != task:
        raise UsageError(f"this is a {model.card.task!r} checkpoint; the app needs a {task!r} model here", path=path)
    return LoadedModel(model.eval(), path, checkpoint_sha256(path))


def scope_refusal(image: Image) -> MedresError | None:
    """Why the chest X-ray model must not score ``image`` (the scope gate's error), or None if it may."""
    return chest_xray_scope_error(ImageFacts.from_image(image))


def model_input(image: Image, card: ModelCard) -> torch.Tensor:
    """The ``(1, C, H, W)`` input for a radiograph, exactly as training and scoring build it.

    Raises:
        OutOfScopeError: The scope gate refuses the image (a CT slice, a lateral, a volume ...).
    """
    check_chest_xray_scope(ImageFacts.from_image(image))
    return preprocess_for_model(image.array, card)[None]


def score_xray(loaded: LoadedModel, image: Image) -> XrayScores:
    """Probabilities of every label for one radiograph (:func:`medres.inference.predict_batch`, as ``score``)."""
    inputs = model_input(image, loaded.card)
    with loaded.lock:
        values = predict_batch(loaded.model.eval(), inputs)[0].tolist()
    return XrayScores(dict(zip(loaded.card.labels, values)), dict(loaded.card.thresholds))


def explain_xray(loaded: LoadedModel, image: Image, label: str, method: str = "gradcam",
                 shape: tuple[int, int] | None = None) -> np.ndarray:
    """The class's normalised map (peak = its probability) over the whole radiograph.

    Args:
        shape: Pixel grid of the result, covering the full field of view: the
            radiograph's own ``(rows, cols)`` by default, or the (aspect-kept)
            size it is displayed at, which avoids computing a full-resolution map.
    """
    inputs = model_input(image, loaded.card)
    with loaded.lock:
        result = explain(loaded.model, inputs, targets=[label], method=method)
    return result.on_original(0, shape or image.spatial_shape[:2], normalized=True, crop=loaded.card.crop)[0]


def scores_json(scores: XrayScores, loaded: LoadedModel, source: str) -> str:
    """The downloadable scores: probabilities, thresholds and calls, model identity, the notice.

    ``source`` is the name the user opened (relative to the root, or the upload's
    name); nothing from the DICOM header goes in, so the file holds no PHI.
    """
    payload = {
        "source": source,
        "model": loaded.card.name,
        "checkpoint_sha256": loaded.sha256,
        "probabilities": scores.probabilities,
        "thresholds": scores.thresholds,
        "calls": scores.calls,
        "notice": RESEARCH_NOTICE,
    }
    return json.dumps(payload, indent=2)


def card_summary(card: ModelCard) -> dict:
    """The model card fields a reviewer needs, as plain JSON-able data."""
    return {
        "name": card.name, "task": card.task, "labels": list(card.labels), "input_size": list(card.input_size),
        "spacing": card.spacing, "normalization": card.normalization, "thresholds": card.thresholds,
        "gradcam_layer": card.gradcam_layer, "training_data_fingerprint": card.training_data_fingerprint,
        "medres_version": card.medres_version,
    }
