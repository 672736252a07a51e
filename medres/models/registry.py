"""Models by name: a timm-style registry of small factory functions.

Each architecture is a few-line factory decorated with :func:`register_model`;
everything else (training, scoring, the app, checkpoint loading) asks for a
model by its registry name with :func:`create_model`, so a checkpoint needs to
store only the name and its card to be rebuilt.

Factory contract: ``factory(**overrides) -> nn.Module`` where ``overrides`` are
model-card fields (see :data:`medres.models.card.OVERRIDABLE_FIELDS`); the
architecture follows the card (``len(labels)`` outputs, ``in_channels``
inputs), and the returned module carries its card as ``model.card``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from medres.errors import InvalidModelCardError, UnknownModelError, UsageError
from medres.models.card import TASKS, ModelCard

ModelFactory = Callable[..., nn.Module]
FactoryT = TypeVar("FactoryT", bound=ModelFactory)


@dataclass(frozen=True)
class _RegisteredModel:
    factory: ModelFactory
    task: str


_REGISTRY: dict[str, _RegisteredModel] = {}


def register_model(*, task: str) -> Callable[[FactoryT], FactoryT]:
    """Register a factory under its function name, for ``create_model(name)``.

    The task is declared here, not read from the card, so that
    :func:`list_models` can filter without building every network.

    Args:
        task: ``"cxr"``, ``"seg"`` or ``"vol"``; must match the card the factory attaches.

    Returns:
        A decorator that records the factory and returns it unchanged.

    Example:
        >>> @register_model(task="cxr")
        ... def chexnet_resnet50(**overrides): ...
    """
    if task not in TASKS:
        raise UsageError(f"task {task!r} is not one of {', '.join(TASKS)}")

    def decorator(factory: FactoryT) -> FactoryT:
        name = factory.__name__
        if name in _REGISTRY and _REGISTRY[name].factory is not factory:
            raise UsageError(f"a model named {name!r} is already registered; pick another function name")
        _REGISTRY[name] = _RegisteredModel(factory=factory, task=task)
        return factory

    return decorator


def create_model(name: str, /, **overrides: Any) -> nn.Module:
    """Build a registered model (untrained) with its card attached as ``model.card``.

    Args:
        name: A registry name, e.g. ``"chexnet_resnet50"``.
        **overrides: Model-card fields to change, e.g. ``labels=("Effusion",)``
            for a one-output head or ``in_channels=3``.

    Raises:
        UnknownModelError: No model has that name; the message lists those that do.
        UsageError: An override is not an overridable card field.
    """
    registered = _lookup(name)
    model = registered.factory(**overrides)
    card = getattr(model, "card", None)
    if not isinstance(card, ModelCard) or card.name != name or card.task != registered.task:
        raise InvalidModelCardError(
            f"factory {name!r} must attach a ModelCard with name {name!r} and task {registered.task!r}, "
            f"got {card!r}"
        )
    return model


def list_models(task: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally only those for one task."""
    if task is not None and task not in TASKS:
        raise UsageError(f"task {task!r} is not one of {', '.join(TASKS)}")
    return sorted(name for name, registered in _REGISTRY.items() if task in (None, registered.task))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _REGISTRY


def attach_card(model: nn.Module, card: ModelCard) -> nn.Module:
    """Set ``model.card`` after checking that the Grad-CAM layer exists.

    Checking here makes a typo in a factory's ``gradcam_layer`` fail when the
    model is built, not later inside the review app.
    """
    if card.gradcam_layer:
        try:
            model.get_submodule(card.gradcam_layer)
        except AttributeError:
            raise InvalidModelCardError(
                f"gradcam_layer {card.gradcam_layer!r} is not a submodule of model {card.name!r}"
            ) from None
    model.card = card
    return model


def _lookup(name: str) -> _RegisteredModel:
    """The entry for ``name``, or an error listing the valid names (as MONAI's ``look_up_option``)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    valid = sorted(_REGISTRY)
    close = difflib.get_close_matches(str(name), valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}; registered models are: {', '.join(valid)}.{hint}")
