"""Batched prediction of a classifier: logits under the requested precision, then the card's output activation.

Training's validation, ``eval cxr``, ``score``, the review app and Grad-CAM
all turn logits into probabilities here, so a model's outputs mean the same
thing in every command. :func:`output_activation` gives the function the
card's ``output_activation`` field names: a sigmoid per label for the
multi-label classifiers (``cxr`` and ``vol`` by default: each finding is
present or not, independently of the others) and a softmax over the classes
for segmentation (``seg``: each voxel has one label).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medres.models.card import ModelCard
from medres.runtime import autocast_context

Activation = Callable[[torch.Tensor], torch.Tensor]
"""Logits ``(B, K, ...)`` -> float32 probabilities of the same shape."""

def sigmoid_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Independent per-label probabilities, computed in float32 whatever the logits' dtype."""
    return torch.sigmoid(logits.float())


def softmax_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """One distribution over the classes (axis 1 of a batch), computed in float32."""
    return torch.softmax(logits.float(), dim=1)


ACTIVATIONS: dict[str, Activation] = {"sigmoid": sigmoid_probabilities, "softmax": softmax_probabilities}
"""The function of each of the card's :data:`~medres.models.card.OUTPUT_ACTIVATIONS`."""


def output_activation(card: ModelCard) -> Activation:
    """The function that turns the card's model's logits into probabilities (its ``output_activation``).

    The card has validated the name, so every card has one.
    """
    return ACTIVATIONS[card.output_activation]


@torch.no_grad()
def predict_batch(model: nn.Module, inputs: torch.Tensor, precision: str = "fp32") -> np.ndarray:
    """Probabilities ``(B, n_labels)`` (float32, on the CPU) of one batch of preprocessed inputs.

    The forward pass runs under ``precision``'s autocast on the model's device
    (inputs are moved there); the activation runs in float32 outside it.

    Args:
        model: A registered model in eval mode, its card as ``model.card``.
        inputs: ``(B, C, *spatial)`` as the card's preprocessing makes them.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (see :mod:`medres.runtime`).
    """
    device = next(model.parameters()).device
    with autocast_context(device, precision):
        logits = model(inputs.to(device))
    return output_activation(model.card)(logits).cpu().numpy()


def predict_dataset(model: nn.Module, dataset: Dataset, batch_size: int = 64, workers: int = 0,
                    precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets for every ``(inputs, targets)`` item of ``dataset``, in order.

    Puts the model in eval mode (training's validation switches it back).

    Returns:
        ``(probabilities, targets)``, each ``(n_items, n_labels)``.
    """
    model.eval()
    probabilities, targets = [], []
    for inputs, labels in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        probabilities.append(predict_batch(model, inputs, precision))
        targets.append(labels.numpy())
    return np.concatenate(probabilities), np.concatenate(targets)
