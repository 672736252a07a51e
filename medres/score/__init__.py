"""Batch scoring of folders: walk, decode in worker processes, batch, journal, tables.

``score_folder(ScoreConfig(input_dir, checkpoint, out_dir))`` is the API behind
``medres score``; see :mod:`medres.score.pipeline` for how the parts fit.
"""

from __future__ import annotations

from medres.score.pipeline import ScoreSummary, score_folder
from medres.score.setup import ScoreConfig

__all__ = ["ScoreConfig", "ScoreSummary", "score_folder"]
