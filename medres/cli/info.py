"""``medres info PATH``: what medres reads from an image, without patient identifiers."""

from __future__ import annotations

import argparse
import json

import numpy as np

from medres.io import DEFAULT_SIZE_BUDGET, Image, read_image


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="read an image and print its geometry and metadata",
                                   description="Read a DICOM file, DICOM series folder, NIfTI or PNG/JPEG "
                                   "and print shape, spacing, affine and PHI-free metadata.")
    parser.add_argument("path", help="file or DICOM series folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size-budget", type=int, default=DEFAULT_SIZE_BUDGET, help="bytes of decoded pixels allowed")
    parser.set_defaults(handler=run)


def describe(image: Image) -> dict:
    """A JSON-able summary of an image."""
    return {
        "shape": list(image.array.shape),
        "spacing_mm": [round(value, 6) for value in image.spacing],
        "modality": image.modality,
        "value_range": [float(np.min(image.array)), float(np.max(image.array))],
        "affine": np.round(image.affine, 6).tolist(),
        "meta": image.meta,
    }


def run(args: argparse.Namespace) -> int:
    summary = describe(read_image(args.path, size_budget=args.size_budget))
    if args.json:
        print(json.dumps(summary))
        return 0
    for key, value in summary.items():
        if key != "meta":
            print(f"{key:>12}: {value}")
    for key, value in sorted(summary["meta"].items()):
        print(f"{key:>28}: {value}")
    return 0
