"""Packages that import their parts on first use, so a command imports only what it runs.

``medres.score``, ``medres.inference`` and ``medres.metrics`` re-export names
from their modules; importing every module up front would make, say, batch
scoring import MONAI through the sliding window, or ``medres segment`` import
scikit-learn through the classification metrics (seconds each). Such a
package lists its names and modules and sets::

    __getattr__ = lazy_attributes(__name__, _PUBLIC)

(with the same imports under ``if TYPE_CHECKING:`` for type checkers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, public: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that imports each name of ``public`` (name -> module) when first asked for."""

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
