"""Run every ``benchmarks/bench_*.py`` and rewrite ``benchmarks/RESULTS.md``.

    make bench        (or: python benchmarks/run_all.py [--quick] [--only NAME])

``--only NAME`` re-runs ``bench_NAME.py`` and replaces just its section of
RESULTS.md, adding a line to the header that says so.

Each script prints a Markdown section whose figures are ratios against a plain
reference measured side by side in the same run; this file adds the machine
and the command that produced them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}; "
            f"GPU: {gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only bench_<ONLY>.py")
    parser.add_argument("--quick", action="store_true", help="pass --quick to the scripts that have it")
    args = parser.parse_args()
    scripts = sorted(HERE.glob(f"bench_{args.only or '*'}.py"))
    sections = []
    for script in scripts:
        print(f"running {script.name} ...", file=sys.stderr)
        quick = ["--quick"] if args.quick and '"--quick"' in script.read_text() else []
        result = subprocess.run([sys.executable, str(script), *quick], capture_output=True, text=True, cwd=HERE.parent)
        if result.returncode != 0:
            sections.append(f"## {script.name} FAILED\n\n```\n{result.stderr[-3000:]}\n```\n")
        else:
            sections.append(result.stdout.strip() + "\n")
        print(sections[-1])
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    if args.only:
        replace_section(RESULTS, f"({scripts[0].name})", sections[0], f"{command} --only {args.only}")
        return
    header = (f"# Benchmark results\n\nProduced by `{command}` (`make bench` runs it without --quick) on "
              f"{datetime.date.today().isoformat()}.\n\nMachine: {machine_description()}.\n\n"
              "Every figure is a ratio against a plain reference measured side by side in the same run; "
              "machines here are shared and noisy, so trust only differences that repeat.\n\n")
    RESULTS.write_text(header + "\n".join(sections))


def replace_section(results: Path, marker: str, section: str, command: str) -> None:
    """Swap the ``## `` section whose title holds ``marker`` for ``section``; note the re-run in the header.

    The note replaces an older one for the same section. Text added by hand to
    a section (runs with other settings, spreads over training runs) is lost
    with the section: keep such notes in the section's script output, or add
    them again.
    """
    header, *sections = results.read_text().split("\n## ")
    sections = [section.removeprefix("## ").strip() + "\n" if marker in old.splitlines()[0] else old
                for old in sections]
    stale = f"The {marker.strip('()')} section was re-run on "
    note = f"{stale}{datetime.date.today().isoformat()} by `{command}`."
    header = "\n\n".join(paragraph for paragraph in header.rstrip("\n").split("\n\n")
                         if not paragraph.startswith(stale)) + f"\n\n{note}\n"
    results.write_text("\n## ".join([header, *sections]))


if __name__ == "__main__":
    main()
