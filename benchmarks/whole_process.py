"""Whole-process timing shared by ``bench_score.py`` and ``bench_segment.py`` (imported from their own folder).

A user waits for the whole process: the interpreter's start, the imports,
the model's loading, reading, inference and writing. :func:`compare_processes`
runs each variant as its own process (the ``medres`` command as a user types
it, the plain script as a user would run it), alternating the variants so
that load from other users of the machine hits them alike, after one warm-up
run of each (so both find the libraries in the page cache), and keeps each
run's wall time and, for ``medres``, the timing breakdown its JSON output
records (see ``medres/timing.py``).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medres.timing import describe_parts

ENTRY_POINTS_NOTE = ("`medres` (the console script) and `python -m medres` run the same command through "
                     "`medres.cli.main:console_main`, which ends the process once every output is written instead of "
                     "letting the interpreter tear down its imports; they differ only in how the interpreter starts.")


@dataclass
class ProcessVariant:
    """One way of doing the job, as a command line.

    Attributes:
        name: How the report names it.
        command: The command line.
        out: Output file or folder, removed before every run (``medres score`` would otherwise resume).
        timings_json: The JSON file whose ``timings`` the command writes (None: it writes none).
    """

    name: str
    command: list[str]
    out: Path
    timings_json: Path | None = None
    seconds: list[float] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)


def medres_command(*arguments: str) -> list[str]:
    """``medres ARGUMENTS`` through the console script beside this interpreter (as a user runs it)."""
    script = Path(sys.executable).parent / "medres"
    return [str(script), *arguments] if script.exists() else [sys.executable, "-m", "medres", *arguments]


def module_command(*arguments: str) -> list[str]:
    """``python -m medres ARGUMENTS``: the entry point that ends the process without tearing down its imports."""
    return [sys.executable, "-m", "medres", *arguments]


def run_once(variant: ProcessVariant) -> float:
    """Run the variant's command once from scratch; its wall time in seconds."""
    if variant.out.is_dir():
        shutil.rmtree(variant.out)
    variant.out.unlink(missing_ok=True)
    started = time.perf_counter()
    result = subprocess.run(variant.command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{variant.name} failed ({result.returncode}): {' '.join(variant.command)}\n"
                         f"{result.stderr[-3000:]}")
    return seconds


def compare_processes(variants: list[ProcessVariant], repeats: int) -> list[ProcessVariant]:
    """Run every variant ``repeats`` times, alternating, after one warm-up each; returns them with their times."""
    for variant in variants:
        run_once(variant)
    for _ in range(repeats):
        for variant in variants:
            variant.seconds.append(run_once(variant))
            if variant.timings_json is not None:
                variant.timings.append(json.loads(variant.timings_json.read_text())["timings"])
    return variants


def median_breakdown(timings: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median over runs of every moment (``since_process_start``) and stage duration (``seconds``)."""
    result: dict[str, dict[str, float]] = {}
    for part in ("since_process_start", "seconds"):
        names = dict.fromkeys(name for timing in timings for name in timing.get(part, {}))
        result[part] = {name: statistics.median(timing[part].get(name, 0.0) for timing in timings) for name in names}
    return result


def breakdown_text(timings: list[dict[str, Any]]) -> str:
    """The median breakdown on one line (in the words of ``--verbose``), for a table cell or a paragraph."""
    medians = median_breakdown(timings)
    moments = dict(sorted(medians["since_process_start"].items(), key=lambda item: item[1]))
    return "; ".join(describe_parts({"since_process_start": moments, "seconds": medians["seconds"]}))


def print_table(results: list[tuple[str, list[ProcessVariant]]], input_header: str) -> None:
    """One row per input: each variant's median seconds (runs listed), then the last variant (the plain
    script) over each of the others, ratios taken within each repeat."""
    variants = results[0][1]
    reference = variants[-1].name
    print(f"| {input_header} | " + " | ".join(f"{variant.name}, s" for variant in variants) + " | "
          + " | ".join(f"{reference} / {variant.name}" for variant in variants[:-1]) + " |")
    print("|---" * (2 * len(variants)) + "|")
    for name, row in results:
        times = [f"{statistics.median(variant.seconds):.2f} ({listed(variant.seconds)})" for variant in row]
        speedups = [ratios(row[-1].seconds, variant.seconds) for variant in row[:-1]]
        print(f"| {name} | " + " | ".join(times) + " | "
              + " | ".join(f"**{statistics.median(values):.2f}x** ({listed(values)})" for values in speedups) + " |")


def listed(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{value:.{digits}f}" for value in values)


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repeat ratios (the runs of one repeat ran back to back, under the same load)."""
    return [top / bottom for top, bottom in zip(numerators, denominators)]
