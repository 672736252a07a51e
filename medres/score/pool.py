"""A process pool that loses only the file whose decoder killed its worker.

``concurrent.futures.ProcessPoolExecutor`` marks the whole pool broken when
one worker dies (a segfault in a C decoder, ``os._exit``, the OOM killer):
every file in flight fails with ``BrokenProcessPool``, and the culprit is not
named. This wrapper keeps results that completed before the break, starts a
new pool, and retries each file that was in flight *alone*: files that decode
fine alone are recovered, and a file that kills a worker on its own is
reported through ``crash_result``. A crash therefore costs one file (plus a
pool restart), never the run.

The number of files in flight is bounded (``max_in_flight``), which bounds
memory however large the folder: the caller submits as it walks, and
``submit`` waits for results once the bound is reached.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Finished(Generic[ItemT, ResultT]):
    """A submitted item with its result."""

    item: ItemT
    result: ResultT


class CrashIsolatingPool(Generic[ItemT, ResultT]):
    """Run ``function(*arguments)`` for items in worker processes, surviving worker deaths.

    Args:
        function: A picklable top-level function run in the workers.
        crash_result: Builds the result for an item whose worker died while
            processing it alone.
        error_result: Builds the result when ``function`` raised or its
            result could not be sent back (the function should not raise).
        workers: Worker processes.
        max_in_flight: Most items submitted and not yet returned.
        initializer: Run once in each worker with ``initargs``.
        start_method: ``"fork"`` (fast, and workers inherit the parent's
            modules, monkeypatches included), ``"forkserver"`` or ``"spawn"``.
        drain_when_full: Once ``max_in_flight`` items are in flight, wait for
            all of them (not just one) before accepting more, so the caller's
            work between submissions never runs alongside the workers.
    """

    def __init__(self, function: Callable[..., ResultT], *, crash_result: Callable[[ItemT], ResultT],
                 error_result: Callable[[ItemT, BaseException], ResultT], workers: int, max_in_flight: int,
                 initializer: Callable[..., None] | None = None, initargs: Sequence[Any] = (),
                 start_method: str = "fork", drain_when_full: bool = False) -> None:
        self.function, self.crash_result, self.error_result = function, crash_result, error_result
        self.workers, self.max_in_flight = max(1, workers), max(1, max_in_flight)
        self.initializer, self.initargs = initializer, tuple(initargs)
        self.context = multiprocessing.get_context(start_method)
        self.drain_when_full = drain_when_full
        self.in_flight: dict[Future, tuple[ItemT, tuple[Any, ...]]] = {}
        self.restarts = 0
        self.executor = self._new_executor()

    def __enter__(self) -> CrashIsolatingPool[ItemT, ResultT]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (waiting ones are cancelled)."""
        self.executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, item: ItemT, *arguments: Any) -> list[Finished[ItemT, ResultT]]:
        """Queue ``item``; returns whatever finished while waiting for room."""
        finished: list[Finished[ItemT, ResultT]] = []
        while len(self.in_flight) >= self.max_in_flight:
            finished += self.drain() if self.drain_when_full else self.collect(block=True)
        return finished + self.queue(item, *arguments)

    def queue(self, item: ItemT, *arguments: Any) -> list[Finished[ItemT, ResultT]]:
        """Queue ``item`` without waiting for room: the caller bounds how many it queues this way.

        Used to hand the workers their first files before the caller turns to
        other work (loading a model); returns results only if a broken pool had
        to be restarted first.
        """
        finished: list[Finished[ItemT, ResultT]] = []
        try:
            future = self.executor.submit(self.function, *arguments)
        except BrokenProcessPool:
            finished += self._recover([])
            future = self.executor.submit(self.function, *arguments)
        self.in_flight[future] = (item, arguments)
        return finished

    def collect(self, block: bool) -> list[Finished[ItemT, ResultT]]:
        """Results of items that are done (waiting for at least one when ``block``)."""
        if not self.in_flight:
            return []
        done, _ = wait(list(self.in_flight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        finished, suspects = self._sort_done(done)
        if suspects:
            finished += self._recover(suspects)
        return finished

    def drain(self) -> list[Finished[ItemT, ResultT]]:
        """Wait for every item in flight."""
        finished: list[Finished[ItemT, ResultT]] = []
        while self.in_flight:
            finished += self.collect(block=True)
        return finished

    def _sort_done(self, done: set[Future]) -> tuple[list[Finished], list[tuple[ItemT, tuple[Any, ...]]]]:
        finished, suspects = [], []
        for future in done:
            item, arguments = self.in_flight.pop(future)
            try:
                finished.append(Finished(item, future.result()))
            except BrokenProcessPool:
                suspects.append((item, arguments))
            except Exception as error:  # noqa: BLE001  (e.g. an unpicklable result)
                finished.append(Finished(item, self.error_result(item, error)))
        return finished, suspects

    def _recover(self, suspects: list[tuple[ItemT, tuple[Any, ...]]]) -> list[Finished[ItemT, ResultT]]:
        """After a worker died: keep finished results, restart, retry each suspect alone."""
        wait(list(self.in_flight))  # the broken pool fails every remaining future promptly
        finished, more_suspects = self._sort_done(set(self.in_flight))
        self._restart()
        for item, arguments in suspects + more_suspects:
            finished.append(self._run_alone(item, arguments))
        return finished

    def _run_alone(self, item: ItemT, arguments: tuple[Any, ...]) -> Finished[ItemT, ResultT]:
        try:
            return Finished(item, self.executor.submit(self.function, *arguments).result())
        except BrokenProcessPool:
            self._restart()
            return Finished(item, self.crash_result(item))
        except Exception as error:  # noqa: BLE001
            return Finished(item, self.error_result(item, error))

    def _restart(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._new_executor()
        self.restarts += 1

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=self.initializer,
                                   initargs=self.initargs)
