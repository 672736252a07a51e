"""Run every ``benchmarks/bench_*.py`` and rewrite ``benchmarks/RESULTS.md``.

    make bench        (or: python benchmarks/run_all.py [--only NAME])

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
    header = (f"# Benchmark results\n\nProduced by `{command}` (`make bench` runs it without --quick) on "
              f"{datetime.date.today().isoformat()}.\n\nMachine: {machine_description()}.\n\n"
              "Every figure is a ratio against a plain reference measured side by side in the same run; "
              "machines here are shared and noisy, so trust only differences that repeat.\n\n")
    (HERE / "RESULTS.md").write_text(header + "\n".join(sections))


if __name__ == "__main__":
    main()
