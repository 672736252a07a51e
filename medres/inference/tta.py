"""Test-time augmentation by mirroring: average a model's outputs over flipped copies of its input.

Only the axes the model was trained to be mirror-invariant along are flipped
(the card's ``mirror_axes``), as nnU-Net does: mirroring along an axis the
model never saw flipped (left-right for a model that tells the liver from the
spleen by side) would hurt.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from medres.models.card import ModelCard


def mirror_flips(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of flips of the given spatial axes (the identity first), as tensor dims."""
    dims = [axis + 2 for axis in mirror_axes]
    return [combo for count in range(len(dims) + 1) for combo in itertools.combinations(dims, count)]


def tta_mirror_axes(card: ModelCard, notes: list[str]) -> tuple[int, ...]:
    """The axes the model was trained to be mirror-invariant along (the card's ``mirror_axes``).

    A card that does not state them has the default :class:`~medres.models.card.ModelCard`
    documents (all three axes for a volume). Appends a note to ``notes`` when
    there are none, so the user learns that asking for TTA changed nothing.
    """
    axes = card.mirror_axes
    if not axes:
        notes.append("--tta has no effect: the model was trained without mirroring")
    return axes


def average_over_flips(forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                       flips: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """The mean of ``forward`` over flipped copies of ``batch``, each output flipped back.

    Copies are averaged in float32; a single copy (no flips) is returned as
    ``forward`` gave it, in its own dtype and layout.

    Args:
        forward: The model (or any function from a batch to outputs with the same spatial axes).
        batch: ``(B, C, *spatial)`` inputs.
        flips: Tensor dims to flip together, one tuple per copy (``()`` is the input itself),
            as :func:`mirror_flips` lists them.
    """
    if len(flips) == 1 and not flips[0]:
        return forward(batch)
    total = None
    for dims in flips:
        outputs = forward(torch.flip(batch, dims) if dims else batch).float()
        outputs = torch.flip(outputs, dims) if dims else outputs
        total = outputs if total is None else total + outputs
    return total / len(flips)
