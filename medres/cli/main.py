"""The ``medres`` command: one parser, one module per subcommand, no logic here.

Each subcommand module has ``register(subparsers)``, which adds its parser and
sets ``handler`` to a function ``handler(args) -> int``. Errors the user can
cause (``MedresError``) end as one line on stderr and a non-zero exit code,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from medres import __version__
from medres.cli import app, demo, evaluate, info, prepare, score, segment, train
from medres.errors import MedresError

SUBCOMMAND_MODULES = (app, demo, evaluate, info, prepare, score, segment, train)
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="medres",
        description="Chest X-ray classification, CT/MRI segmentation, batch DICOM scoring and review. "
        "Research use only, not for diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"medres {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library warnings and debug logs")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def configure_logging(verbose: bool) -> None:
    """Library warnings go to logging, hidden unless --verbose: they can quote header values."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="medres: %(message)s")
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    logging.getLogger("pydicom").setLevel(logging.WARNING if verbose else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    configure_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except MedresError as error:
        print(f"medres: error: {error.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medres: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
