"""``medres demo``: the product tour on bundled, synthetic sample data."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from medres.errors import MedresError, UsageError
from medres.io import read_image

DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the product tour on the bundled synthetic samples",
                                   description="Read every bundled sample (all synthetic: no patient data) "
                                   "and print what medres sees.")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="sample folder (default: %(default)s)")
    parser.set_defaults(handler=run)


def sample_paths(folder: Path) -> list[Path]:
    """Each sample: files that are images and folders that hold a series."""
    if not folder.is_dir():
        raise UsageError(f"sample folder not found; run sample_data/make_samples.py {folder}", path=folder)
    return sorted(path for path in folder.iterdir()
                  if path.is_dir() or path.suffix in (".dcm", ".png", ".jpg", ".gz", ".nii"))


def run(args: argparse.Namespace) -> int:
    print("medres demo: reading the bundled samples. All demo data is synthetic.")
    rows = []
    for path in tqdm(sample_paths(args.samples), desc="reading samples", unit="image"):
        try:
            image = read_image(path)
        except MedresError as error:
            rows.append((path.name, "refused", error.one_line()))
            continue
        spacing = " x ".join(f"{value:.2f}" for value in image.spacing)
        kind = "volume (RAS+)" if image.is_volume else "2D"
        rows.append((path.name, image.modality, f"{kind} {tuple(image.array.shape)} spacing {spacing} mm"))
    width = max(len(name) for name, _, _ in rows)
    for name, modality, text in rows:
        print(f"  {name:<{width}}  {modality:<4} {text}")
    return 0
