"""read_image versus bare pydicom on the same uncompressed radiograph, side by side.

    python benchmarks/bench_io.py [--repeats 30]

Reference: ``pydicom.dcmread(path).pixel_array`` (decode only: no Modality
LUT, no window, no MONOCHROME1 inversion, no float conversion). medres:
``read_image(path)``, which does all of these and builds the geometry and
PHI-free metadata. Runs alternate, so machine noise hits both alike; the
figure is the ratio of medians. Prints a Markdown section.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pydicom

from medres.io import read_image


def radiograph_path() -> Path:
    import data_store

    return Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm"


def time_once(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    path = radiograph_path()
    bare = lambda: pydicom.dcmread(path).pixel_array  # noqa: E731
    medres = lambda: read_image(path)  # noqa: E731
    bare(), medres()  # warm caches and imports
    bare_times, medres_times = [], []
    for _ in range(args.repeats):
        bare_times.append(time_once(bare))
        medres_times.append(time_once(medres))
    bare_median, medres_median = statistics.median(bare_times), statistics.median(medres_times)
    print("## Reading an uncompressed radiograph (bench_io.py)\n")
    print(f"File: pydicom-data `RG1_UNCR.dcm` (CR, MONOCHROME1, 1955 x 1841, 16-bit, 7.2 MB); "
          f"{args.repeats} alternating runs each, medians.\n")
    print("| reader | median ms |")
    print("|---|---|")
    print(f"| pydicom `dcmread` + `pixel_array` (decode only) | {bare_median * 1e3:.1f} |")
    print(f"| medres `read_image` (+ window, inversion, float32, geometry, meta) | {medres_median * 1e3:.1f} |")
    print(f"\n**Ratio medres / pydicom: {medres_median / bare_median:.2f}x** (aim: at most 1.5x)\n")


if __name__ == "__main__":
    main()
