"""The end of a run: tables rebuilt from the journal, ``run.json``, the exit code."""

from __future__ import annotations

import datetime
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from medres import __version__ as MEDRES_VERSION
from medres.errors import ChangedDuringRunError
from medres.score.discover import walk_folder
from medres.score.folder import ERROR_COLUMNS, ERRORS_TABLE, RUN_FILE, SCORES_TABLE, input_root_record
from medres.score.journal import JournalIndex
from medres.score.outcomes import OUTCOMES
from medres.score.outputs import (
    TableWriter,
    remove_stale_temporaries,
    score_columns,
    write_json_atomically,
)
from medres.score.setup import RunSetup
from medres.timing import StageClock

EXIT_OK, EXIT_SOME_FAILED = 0, 3
IDENTITY_DOCUMENTATION = (
    "journal key = SHA-256 of (path relative to the input folder, size, mtime_ns, run fingerprint); "
    "run fingerprint = SHA-256 of (checkpoint SHA-256, pseudonym-key fingerprint, precision, "
    "keep_identifiers, size_budget, reduced_j2k)"
)
CHANGED_RECORD = {"outcome": "failed", "reason": ChangedDuringRunError.reason,
                  "message": ChangedDuringRunError.default_message}


@dataclass
class RunStats:
    """One rank's share of this run (picklable, gathered to rank 0)."""

    rank: int = 0
    outcomes: Counter = field(default_factory=Counter)
    resumed: int = 0
    worker_restarts: int = 0
    seconds: float = 0.0
    clock: StageClock = field(default_factory=StageClock.start)


def finish_run(setup: RunSetup, all_stats: list[RunStats], started: float, world_size: int) -> dict[str, Any]:
    """Rebuild the tables from every rank's journal, write ``run.json``; returns its content."""
    clock = run_clock(all_stats)
    tables_started = time.perf_counter()
    remove_stale_temporaries(setup.out_dir)
    counts, reasons = write_tables(setup)
    tables_seconds = time.perf_counter() - tables_started
    clock.add("writing", tables_seconds)
    clock.mark("finished")
    report = run_report(setup, all_stats, counts, reasons, started, world_size, tables_seconds,
                        model_seconds=clock.seconds.get("inference", 0.0))
    report["timings"].update(clock.record())
    write_json_atomically(setup.out_dir / RUN_FILE, report)
    return report


def run_clock(all_stats: list[RunStats]) -> StageClock:
    """Rank 0's clock with the other ranks' durations added (their moments count when earlier)."""
    clock = all_stats[0].clock
    for stats in all_stats[1:]:
        clock.merge(stats.clock)
    return clock


def write_tables(setup: RunSetup) -> tuple[dict[str, int], dict[str, int]]:
    """Scores and errors tables in walk order, one row per file found; returns counts per outcome and reason.

    The counts also say how many distinct studies and series were scored
    (by pseudonym; PNG/JPEG files belong to none).

    A file found now without a record under its current key changed while the
    run was in progress (its size or mtime differ from when it was scored); it
    is reported as failed ``changed_during_run`` so it is never silently lost.
    """
    config = setup.config
    columns = score_columns(setup.card.labels, config.keep_identifiers)
    scores = TableWriter(setup.out_dir, SCORES_TABLE, columns, config.table_format)
    errors = TableWriter(setup.out_dir, ERRORS_TABLE, ERROR_COLUMNS, config.table_format)
    counts: Counter = Counter({outcome: 0 for outcome in OUTCOMES})
    reasons: Counter = Counter()
    studies: set[str] = set()
    series: set[str] = set()
    try:
        with JournalIndex(setup.out_dir) as journal:
            for entry in walk_folder(setup.input_dir, exclude=setup.out_dir):
                record = journal.get(entry.journal_key(setup.fingerprint)) or CHANGED_RECORD
                counts[record["outcome"]] += 1
                if record["outcome"] == "scored":
                    scores.write(record["row"])
                    studies.add(record["row"].get("study_pseudonym", ""))
                    series.add(record["row"].get("series_pseudonym", ""))
                    continue
                reasons[record["reason"]] += 1
                errors.write({"path": entry.relative, "outcome": record["outcome"], "reason": record["reason"],
                              "message": record["message"]})
        scores.commit()
        errors.commit()
    except BaseException:
        scores.abort()
        errors.abort()
        raise
    counts["scored_studies"], counts["scored_series"] = len(studies - {""}), len(series - {""})
    return dict(counts), dict(sorted(reasons.items()))


def run_report(setup: RunSetup, all_stats: list[RunStats], counts: dict[str, int], reasons: dict[str, int],
               started: float, world_size: int, tables_seconds: float, model_seconds: float) -> dict[str, Any]:
    """The content of ``run.json``: counts, timings, throughput, versions, arguments (no identifiers).

    ``timings`` holds the wall time of the call (``wall_seconds``), of the
    scoring loop, the model and the tables, and (added by :func:`finish_run`)
    the start-up moments and per-stage durations of :mod:`medres.timing`.

    ``input_root`` is the scored folder, absolute and resolved: ``arguments.input_dir``
    is as typed, relative to wherever ``score`` ran, so readers of the folder
    (see :mod:`medres.score.folder`) find the images through ``input_root``.
    """
    this_run: Counter = Counter()
    for stats in all_stats:
        this_run.update(stats.outcomes)
    scoring_seconds = max((stats.seconds for stats in all_stats), default=0.0)
    scored_now = this_run["scored"]
    return {
        **input_root_record(setup.input_dir),
        "exit_code": EXIT_SOME_FAILED if counts.get("failed", 0) else EXIT_OK,
        "counts": {"files_found": sum(counts[outcome] for outcome in OUTCOMES), **counts},
        "reasons": reasons,
        "this_run": {**{outcome: this_run[outcome] for outcome in OUTCOMES},
                     "resumed_from_journal": sum(stats.resumed for stats in all_stats),
                     "worker_restarts": sum(stats.worker_restarts for stats in all_stats)},
        "timings": {"wall_seconds": round(time.time() - started, 3), "scoring_seconds": round(scoring_seconds, 3),
                    "model_seconds": round(model_seconds, 3),
                    "tables_seconds": round(tables_seconds, 3)},
        "images_per_second": round(scored_now / scoring_seconds, 3) if scoring_seconds > 0 else 0.0,
        "model": {"name": setup.card.name, "task": setup.card.task, "checkpoint_sha256": setup.checkpoint_sha256,
                  "labels": list(setup.card.labels), "thresholds": setup.card.thresholds},
        "device": str(setup.device), "precision": setup.precision, "world_size": world_size,
        "schedule": setup.schedule, "workers_per_process": setup.workers,
        "started_at": _iso(started), "finished_at": _iso(time.time()),
        "journal_identity": IDENTITY_DOCUMENTATION,
        "versions": versions(),
        "arguments": setup.config.public_arguments(),
    }


def versions() -> dict[str, str]:
    """Versions of medres and the libraries that decide the numbers."""
    import numpy
    import PIL
    import pydicom
    import torch

    return {"medres": MEDRES_VERSION, "python": platform.python_version(), "torch": torch.__version__,
            "pydicom": pydicom.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__}


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


__all__ = ["RunStats", "finish_run", "write_tables", "EXIT_OK", "EXIT_SOME_FAILED"]
