"""Batch scoring of folders: walk, decode in worker processes, batch, journal, tables.

``score_folder(ScoreConfig(input_dir, checkpoint, out_dir))`` is the API behind
``medres score``; see :mod:`medres.score.pipeline` for how the parts fit.

The package imports its parts when first asked for them, so a reader of an
output folder (:mod:`medres.score.folder`) or of the timing helpers does not
import torch, the workers' decoders or the models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medres.lazy import lazy_attributes

if TYPE_CHECKING:
    from medres.score.pipeline import ScoreSummary, score_folder
    from medres.score.setup import ScoreConfig

_PUBLIC = {"ScoreConfig": "medres.score.setup", "ScoreSummary": "medres.score.pipeline",
           "score_folder": "medres.score.pipeline"}

__all__ = ["ScoreConfig", "ScoreSummary", "score_folder"]


__getattr__ = lazy_attributes(__name__, _PUBLIC)
