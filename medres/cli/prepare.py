"""``medres prepare cxr``: decode a ChestX-ray14 folder once into a memory-mapped cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prepare", help="build preprocessing caches")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    cxr = tasks.add_parser("cxr", help="decode every ChestX-ray14 image once into a uint8 memory-mapped cache",
                           description="Decode every image of a ChestX-ray14 folder (NIH layout) once, resized "
                           "to SIZE x SIZE uint8, so training epochs never re-decode PNGs.")
    cxr.add_argument("--data", type=Path, required=True, help="ChestX-ray14 folder (Data_Entry CSV + images)")
    cxr.add_argument("--size", type=int, default=256, help="stored image size (default: %(default)s)")
    cxr.add_argument("--out", type=Path, help="cache folder (default: DATA/.medres_cache/cxr_SIZE)")
    cxr.add_argument("--workers", type=int, default=2, help="decoding processes (default: %(default)s)")
    cxr.add_argument("--crop", choices=("none", "center_square"), default="none",
                     help="crop each image to its centre square before resizing, as a card with crop "
                     "center_square (an imported torchxrayvision model) expects (default: %(default)s)")
    cxr.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    cxr.set_defaults(handler=run_cxr)


def default_cache_dir(data: Path, size: int) -> Path:
    return data / ".medres_cache" / f"cxr_{size}"


def run_cxr(args: argparse.Namespace) -> int:
    from medres.data.chestxray14 import load_chestxray14
    from medres.data.cxr_dataset import prepare_cxr_cache

    index = load_chestxray14(args.data)
    print(index.summary())
    out = args.out or default_cache_dir(args.data, args.size)
    cache = prepare_cxr_cache(index.table, out, size=args.size, workers=args.workers, progress=args.progress,
                              crop=args.crop)
    print(f"cache: {cache.folder} ({len(cache.row_of):,} images at {cache.size}x{cache.size}; "
          f"{len(cache.failed)} could not be decoded)")
    for failure in cache.failed[:10]:
        print(f"  failed: {failure['image']}: {failure['error']}")
    return 0
