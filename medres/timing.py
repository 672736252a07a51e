"""Where a run's time goes, from the moment its process started: start-up, decode, inference, writing.

``medres score`` and ``medres segment`` record a :class:`StageClock` in their
JSON outputs (``run.json``, ``volumes.json``) and print it with ``--verbose``.
Two kinds of figures:

- moments, in seconds since the process started (``since_process_start``):
  when the run was called (the interpreter's start and the imports before it),
  when the first image was decoded, when the model was ready, when the run
  finished; they show what the user waits for before anything is computed;
- durations (``seconds``), summed per stage: decoding (in the decoder workers,
  added over workers, so it may exceed the wall time), waiting for decoders,
  inference, writing.

The process start is the interpreter's own: on Linux, ``/proc/self/stat``
gives it in clock ticks since boot, and ``/proc/uptime`` the time since boot
now, so their difference is the process's age (to a clock tick, 10 ms) and
needs no boot time, which ``/proc/stat`` rounds to whole seconds. Where there
is no ``/proc``, the start falls back to the moment this module was first
imported, which leaves out the interpreter's start and the imports before it;
``process_start`` in the record says which was used. Called as a library
(not as the ``medres`` command), "since the process started" includes
whatever the caller did before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODULE_IMPORTED_AT = time.time()
PROC_SOURCE, IMPORT_SOURCE = "/proc/self/stat", "first import of medres.timing"
STARTTIME_FIELD = 21  # 0-based index of ``starttime`` among the fields of /proc/PID/stat (field 22 in proc(5))


def process_start_time() -> tuple[float, str]:
    """The wall-clock time (as ``time.time()``) at which this process started, and how it was found."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields_after_name = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        start_ticks = int(fields_after_name[STARTTIME_FIELD - 2])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return MODULE_IMPORTED_AT, IMPORT_SOURCE
    return time.time() - max(0.0, age), PROC_SOURCE


@dataclass
class StageClock:
    """Moments and per-stage durations of one run, measured from the process's start.

    Attributes:
        process_started: ``time.time()`` when the process started.
        process_start: How ``process_started`` was found (see :func:`process_start_time`).
        moments: Name -> ``time.time()`` when it first happened (``first_image_decoded``, ``model_ready``, ...).
        seconds: Stage name -> seconds spent in it, summed over the run.
    """

    process_started: float
    process_start: str
    moments: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls) -> StageClock:
        """A clock for a run called now (recorded as the moment ``run_called``)."""
        started, source = process_start_time()
        clock = cls(started, source)
        clock.mark("run_called")
        return clock

    def mark(self, moment: str, at: float | None = None) -> None:
        """Record that ``moment`` happened (now, or at ``at``); only its first (earliest) time is kept."""
        at = time.time() if at is None else at
        self.moments[moment] = min(at, self.moments.get(moment, at))

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage``."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def merge(self, other: StageClock) -> None:
        """Fold in another process's clock (a torchrun rank): earliest moments, summed durations."""
        for moment, at in other.moments.items():
            self.mark(moment, at)
        for stage, seconds in other.seconds.items():
            self.add(stage, seconds)

    def record(self) -> dict[str, Any]:
        """The JSON form: moments in seconds since the process started, durations in seconds."""
        return {
            "process_start": self.process_start,
            "since_process_start": {moment: round(at - self.process_started, 3)
                                    for moment, at in sorted(self.moments.items(), key=lambda item: item[1])},
            "seconds": {stage: round(seconds, 3) for stage, seconds in self.seconds.items()},
        }


def describe_parts(record: dict[str, Any]) -> tuple[str, str]:
    """The breakdown of a :meth:`StageClock.record` in words: its moments, then its durations."""
    moments = ", ".join(f"{name.replace('_', ' ')} {value:.2f}"
                        for name, value in record.get("since_process_start", {}).items())
    stages = ", ".join(f"{name.replace('_', ' ')} {value:.2f}" for name, value in record.get("seconds", {}).items())
    return f"s since the process started: {moments}", f"s per stage: {stages}"


def describe(record: dict[str, Any]) -> str:
    """The breakdown as ``--verbose`` prints it: two lines, moments then durations."""
    return "\n".join(f"timings, {part}" for part in describe_parts(record))


__all__ = ["StageClock", "describe", "describe_parts", "process_start_time"]
