"""Batch scoring of a folder: walk -> decoder workers -> batched model -> journal -> tables.

The main process walks the folder (sorted, streaming) and hands each file to
a pool of decoder processes, keeping a bounded number in flight; prepared
inputs are gathered into batches and run through the model at the run's
precision (fp32 unless ``--precision`` asks for bf16 or AMP) by :func:`medres.inference.predict_batch`,
the prediction function of training's validation, ``eval cxr`` and the app.
On a CPU the decoders and the model take turns, each with every core; on a
GPU the decoders prepare the next batch while the model runs (see
:func:`medres.score.setup.resolve_schedule`).
Every batch's outcomes are journaled before the next batch starts; at the end
the tables are rebuilt from the journal (see :mod:`medres.score.journal`).

Start-up is taken off the critical path: the decoder pool starts as soon as
what the workers need is imported, and the first files
(:data:`STARTUP_PREFETCH_BATCHES` batches) are queued to it before the main
process imports the model's code and loads the checkpoint, so the workers
decode while the model loads. Nothing is journaled for those files until the
model has scored them, so a run killed during start-up resumes as any other.
Where the time went (start-up moments, decode, inference, writing) is kept
by a :class:`~medres.timing.StageClock` and written to ``run.json``.

Under torchrun each rank takes every ``world_size``-th file of the walk,
journals to its own file, and rank 0 writes the tables once all ranks are
done, so the result equals a single-process run's.

Batches are always padded to the batch size: the model then sees one input
shape, the kernels do not change with how full a batch is, and an image's
probabilities do not depend on which images share its batch (bit for bit),
which is what lets a resumed or sharded run reproduce an uninterrupted one.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from medres.errors import InternalError, WorkerCrashedError
from medres.runtime import DistributedContext, to_channels_last
from medres.score.discover import InputFile, count_entries, shard, walk_folder
from medres.score.journal import Journal, completed_keys, journal_path
from medres.score.outcomes import outcome_of
from medres.score.pool import CrashIsolatingPool, Finished
from medres.score.privacy import quiet_libraries
from medres.score.report import RunStats, finish_run
from medres.score.setup import RunSetup, ScoreConfig, load_model, prepare_run
from medres.score.worker import WorkerResult, initialize_worker, prepare_file
from medres.timing import StageClock

if TYPE_CHECKING:
    from medres.score.heatmaps import HeatmapWriter

BARRIER_TIMEOUT = datetime.timedelta(hours=24)  # ranks may finish their shards hours apart
STARTUP_PREFETCH_BATCHES = 8  # batches queued to the decoders before the model is loaded (bounds memory)


@dataclass
class ScoreSummary:
    """What a run produced (on torchrun ranks other than 0, only that rank's share)."""

    out_dir: Path
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


def score_folder(config: ScoreConfig) -> ScoreSummary:
    """Score every file under ``config.input_dir``; see the module docstring.

    Returns:
        The summary; ``exit_code`` is 0 when every file was scored or skipped
        and 3 when some failed (the tables are complete either way).

    Raises:
        MedresError: Before any file is opened, for bad options, a missing or
            empty input folder or a refused checkpoint (``usage``, ``not_found``,
            ``empty_input``, ``not_safetensors``, ``unsafe_checkpoint``, ...). Bad
            files never raise.
    """
    started, clock = time.time(), StageClock.start()
    with quiet_libraries(config.verbose):
        context = start_distributed()
        try:
            with clock.timing("checks"):
                setup = prepare_run(config, context.device)
            writer = _heatmap_writer(setup) if config.heatmaps else None
            stats = score_shard(setup, context, writer, clock)
            all_stats = _gather(stats, context)
            if not context.is_main:
                return ScoreSummary(setup.out_dir, 0, counts=stats.outcomes)
            report = finish_run(setup, all_stats, started, context.world_size)
            return ScoreSummary(setup.out_dir, report["exit_code"], report["counts"], report["reasons"], report)
        finally:
            context.close()


def _heatmap_writer(setup: RunSetup) -> HeatmapWriter:
    from medres.score.heatmaps import heatmap_writer  # Grad-CAM's imports only when asked for

    return heatmap_writer(setup.out_dir / "heatmaps")


def start_distributed() -> DistributedContext:
    """Join the torchrun group (with a long barrier timeout) or run as rank 0 of 1."""
    return DistributedContext.from_environment(timeout=BARRIER_TIMEOUT)


def score_shard(setup: RunSetup, context: DistributedContext, writer: HeatmapWriter | None = None,
                clock: StageClock | None = None) -> RunStats:
    """Score this rank's share of the folder, journaling as it goes; returns this rank's counts.

    The model is loaded here (unless ``setup.model`` is already set), after the
    first files are queued to the decoders, so decoding overlaps the loading.
    """
    config = setup.config
    clock = clock if clock is not None else StageClock.start()
    done = completed_keys(setup.out_dir)
    stats = RunStats(rank=context.rank, clock=clock)
    entries = shard(walk_folder(setup.input_dir, exclude=setup.out_dir), context.rank, context.world_size)
    total = count_entries(setup.input_dir, setup.out_dir) if config.progress and context.is_main else None
    bar = tqdm(total=None if total is None else -(-total // context.world_size), unit="file", mininterval=1.0,
               desc="scoring", disable=not (config.progress and context.is_main), dynamic_ncols=True)
    start = time.perf_counter()
    with Journal(journal_path(setup.out_dir, context.rank)) as journal, _decode_pool(setup) as pool:
        clock.mark("decoders_started")
        batcher = Batcher(setup, journal, stats, bar, writer)
        to_decode = _files_to_decode(entries, setup.fingerprint, done, batcher)
        early = _queue_first_files(pool, to_decode, STARTUP_PREFETCH_BATCHES * config.batch_size)
        if setup.model is None:
            with clock.timing("model_load"):
                load_model(setup)
        clock.mark("model_ready")
        batcher.handle_all(early)
        for entry, key in to_decode:
            with clock.timing("waiting_for_decoders"):
                finished = pool.submit((entry, key), entry.path, entry.relative)
            batcher.handle_all(finished)
        with clock.timing("waiting_for_decoders"):
            finished = pool.drain()
        batcher.handle_all(finished)
        batcher.flush()
        stats.worker_restarts = pool.restarts
    stats.seconds = time.perf_counter() - start
    bar.close()
    return stats


def _queue_first_files(pool: CrashIsolatingPool, to_decode: Iterator[tuple[InputFile, str]],
                       count: int) -> list[Finished]:
    """Hand the decoders up to ``count`` files (at least as many as the pool keeps in flight) without waiting.

    Returns results only where a crashed pool had to be restarted meanwhile;
    everything else is collected once the model is ready.
    """
    finished: list[Finished] = []
    for _, (entry, key) in zip(range(max(count, pool.max_in_flight)), to_decode):
        finished += pool.queue((entry, key), entry.path, entry.relative)
    return finished


def _files_to_decode(entries: Iterator[InputFile], fingerprint: str, done: set[str],
                     batcher: Batcher) -> Iterator[tuple[InputFile, str]]:
    """The entries that need a decoder, with their journal keys.

    Entries already journaled under their current key are counted as resumed,
    and entries the walk itself refused are journaled as they come, in walk order.
    """
    for entry in entries:
        key = entry.journal_key(fingerprint)
        if key in done:
            batcher.stats.resumed += 1
            batcher.bar.update(1)
        elif entry.skip is not None:
            batcher.add_record(error_record(entry, key, entry.skip.reason, entry.skip.detail))
        else:
            yield entry, key


def _decode_pool(setup: RunSetup) -> CrashIsolatingPool:
    """The decoder pool for the run's schedule (see :func:`medres.score.setup.resolve_schedule`).

    Alternating, a batch's worth of files is decoded by all workers and
    collected before the model runs; overlapping, up to two batches are in
    flight while the model works.
    """
    config, alternate = setup.config, setup.schedule == "alternate"
    return CrashIsolatingPool(
        prepare_file,
        crash_result=lambda item: WorkerResult(reason=WorkerCrashedError.reason,
                                               message=WorkerCrashedError.default_message),
        error_result=lambda item, error: WorkerResult(reason=InternalError.reason,
                                                      message=f"{type(error).__name__} in the worker pool"),
        workers=setup.workers,
        max_in_flight=config.batch_size if alternate else 2 * config.batch_size + 2 * setup.workers,
        initializer=initialize_worker,
        initargs=(setup.worker_settings,),
        start_method=config.start_method,
        drain_when_full=alternate,
    )


class Batcher:
    """Collects prepared inputs into batches, runs the model, journals every outcome."""

    def __init__(self, setup: RunSetup, journal: Journal, stats: RunStats, bar: tqdm,
                 writer: HeatmapWriter | None) -> None:
        self.setup, self.journal, self.stats, self.bar, self.writer = setup, journal, stats, bar, writer
        self.inputs: list[tuple[InputFile, str, dict[str, str], np.ndarray]] = []
        self.records: list[dict[str, Any]] = []

    def handle_all(self, results: list[Finished]) -> None:
        for finished in results:
            self.handle(finished)

    def handle(self, finished: Finished) -> None:
        """One worker result: an error record, or an input for the next batch."""
        (entry, key), result = finished.item, finished.result
        clock = self.stats.clock
        clock.add("decode_in_workers", result.seconds)
        if result.reason:
            self.add_record(error_record(entry, key, result.reason, result.message))
            return
        clock.mark("first_image_decoded", result.finished_at)
        self.inputs.append((entry, key, result.info, result.inputs))
        if len(self.inputs) >= self.setup.config.batch_size:
            self.run_batch()

    def add_record(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if len(self.records) >= self.setup.config.batch_size:
            self._write()

    def run_batch(self) -> None:
        """Score the gathered inputs (padded to the batch size) and journal their rows."""
        if not self.inputs:
            return
        setup, started = self.setup, time.perf_counter()
        batch = _padded_batch([item[3] for item in self.inputs], setup.config.batch_size, setup.device)
        with torch.inference_mode():
            probabilities = setup.task.predict(setup.model, batch, setup.config.precision)[: len(self.inputs)]
        seconds = time.perf_counter() - started
        self.stats.clock.add("inference", seconds)
        self.stats.clock.mark("first_batch_scored")
        rows = [scored_row(setup, entry.relative, info, probabilities[index])
                for index, (entry, _, info, _) in enumerate(self.inputs)]
        if self.writer is not None:
            self.writer.write(setup.model, batch[: len(rows)], rows, setup.card)
        self.records += [{"key": key, "path": entry.relative, "outcome": "scored", "reason": "", "message": "",
                          "row": row} for (entry, key, _, _), row in zip(self.inputs, rows)]
        self.inputs = []
        self._write()

    def flush(self) -> None:
        """Score a last partial batch and write every pending record."""
        self.run_batch()
        self._write()

    def _write(self) -> None:
        with self.stats.clock.timing("writing"):
            written = self.journal.append(self.records)
        for record in self.records:
            self.stats.outcomes[record["outcome"]] += 1
        self.records = []
        self.bar.update(written)


def scored_row(setup: RunSetup, relative: str, info: dict[str, str], probabilities: np.ndarray) -> dict[str, Any]:
    from medres.score.outputs import score_row

    card = setup.card
    return score_row(info, relative, probabilities.tolist(), card.labels, card.thresholds, card.name,
                     setup.checkpoint_sha256)


def error_record(entry: InputFile, key: str, reason: str, message: str) -> dict[str, Any]:
    """The journal record of a file that was skipped or failed."""
    return {"key": key, "path": entry.relative, "outcome": outcome_of(reason), "reason": reason,
            "message": " ".join(message.split())}


def _padded_batch(arrays: list[np.ndarray], batch_size: int, device: torch.device) -> torch.Tensor:
    batch = np.zeros((batch_size, *arrays[0].shape), dtype=np.float32)
    for index, array in enumerate(arrays):
        batch[index] = array
    tensor = torch.from_numpy(batch).to(device, non_blocking=True)
    return to_channels_last(tensor)


def _gather(stats: RunStats, context: DistributedContext) -> list[RunStats]:
    """Every rank's stats on every rank (also the barrier before rank 0 writes the tables)."""
    if context.world_size == 1:
        return [stats]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, stats)
    return gathered


__all__ = ["ScoreConfig", "ScoreSummary", "score_folder"]
