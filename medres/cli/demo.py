"""``medres demo``: the product tour on synthetic data (see ``medres.tour``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the product tour on synthetic data (about 10 minutes on 2 CPU cores)",
        description="Generate a synthetic ChestX-ray14 folder, prepare the cache, train and evaluate chexnet_tiny, "
        "batch-score a sample DICOM export, train resunet3d_tiny on CT phantoms and segment a DICOM series, then "
        "print where every report is and how to open the review app. All demo data is synthetic.")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster tour (for tests)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from medres.tour import TourSettings, run_tour, summary_lines

    print("medres demo: every journey on SYNTHETIC data; nothing here comes from a patient.")
    settings = TourSettings(out=args.out, progress=args.progress)
    if args.quick:
        settings = TourSettings(out=args.out, n_images=300, image_size=64, cxr_epochs=2, n_phantoms=6, seg_epochs=2,
                                progress=args.progress)
    result = run_tour(settings)
    print("\n".join(summary_lines(result, settings)))
    return 0
