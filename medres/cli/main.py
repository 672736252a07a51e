"""The ``medres`` command: one parser, one module per subcommand, one table of exit codes.

Each subcommand module has ``register(subparsers)``, which adds its parser and
sets ``handler`` to a function ``handler(args) -> int``. Everything a command
can end with is turned into an exit code here, the same way for every
command (:data:`EXIT_CODES`): a mistake the user can fix (``MedresError``)
is one line on stderr, ``medres: error: REASON: message``, never a traceback;
an unexpected exception is one line too, with the traceback only under
``--verbose``. The paths a command reads are checked before its handler runs
(:mod:`medres.cli.inputs`).

Only the module of the subcommand being run is imported (all of them for
``medres --help``), so a command never waits for the imports of another
(``import-weights`` alone pulls in every model and MONAI).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
import textwrap
import traceback
from collections.abc import Sequence
from typing import NoReturn

from medres import __version__
from medres.cli.inputs import check_inputs
from medres.errors import MedresError

SUBCOMMAND_MODULES: dict[str, str] = {
    "app": "medres.cli.app", "demo": "medres.cli.demo", "eval": "medres.cli.evaluate",
    "import-weights": "medres.cli.import_weights", "info": "medres.cli.info", "prepare": "medres.cli.prepare",
    "score": "medres.cli.score", "segment": "medres.cli.segment", "train": "medres.cli.train",
}
"""Subcommand as typed -> the module that registers it (in ``--help`` order), imported only when needed."""

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2
EXIT_SOME_FILES_FAILED = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_USAGE: "usage error, or input that cannot be read or is refused (missing path, empty folder, not an "
    "image, refused checkpoint, bad option); nothing was done",
    EXIT_SOME_FILES_FAILED: "finished, but some files failed (`score`: see errors.csv)",
    EXIT_INTERNAL_ERROR: "internal error (a bug: rerun with --verbose and report the traceback), or the outputs "
    "could not be written (disk full, permissions)",
    EXIT_INTERRUPTED: "interrupted (Ctrl+C); `score` and `train --resume` continue where it stopped",
}
"""Exit code -> meaning: the one table every subcommand follows (and ``medres --help`` prints)."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser: with every subcommand, or only the one ``argv`` names.

    Args:
        argv: The arguments about to be parsed. When their first positional
            argument is a subcommand, only that subcommand's module is imported
            and registered; otherwise (None, ``--help``, a typo) all of them are,
            so the usage message lists every command.
    """
    parser = argparse.ArgumentParser(
        prog="medres",
        description="Chest X-ray classification, CT/MRI segmentation, batch DICOM scoring and review. "
        "Research use only, not for diagnosis.",
        epilog=exit_code_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medres {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show library warnings, debug logs and the traceback of an internal error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in subcommands_to_register(argv):
        importlib.import_module(SUBCOMMAND_MODULES[name]).register(subparsers)
    for command, subparser in subcommands(parser).items():
        subparser.set_defaults(command_path=command)
        # also after the subcommand (`medres score ... --verbose`); SUPPRESS keeps `medres -v score` working
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="show library warnings, debug logs and tracebacks")
    return parser


def subcommands_to_register(argv: Sequence[str] | None) -> list[str]:
    """The subcommand ``argv`` runs (its first argument that is not an option), or every one."""
    first = next((argument for argument in argv or () if not argument.startswith("-")), None)
    return [first] if first in SUBCOMMAND_MODULES else list(SUBCOMMAND_MODULES)


def subcommands(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every runnable subcommand as typed (``("train", "cxr")``) -> its parser, found by walking the parser."""
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                nested = subcommands(subparser)
                found.update({(name, *path): leaf for path, leaf in nested.items()} if nested else {(name,): subparser})
    return found


def exit_code_help() -> str:
    """The exit-code table as ``--help`` shows it."""
    lines = [textwrap.fill(meaning, width=100, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
             for code, meaning in EXIT_CODES.items()]
    return "exit codes (every command):\n" + "\n".join(lines)


def configure_logging(verbose: bool) -> None:
    """Library warnings go to logging, hidden unless --verbose: they can quote header values."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="medres: %(message)s")
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    logging.getLogger("pydicom").setLevel(logging.WARNING if verbose else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :data:`EXIT_CODES`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)  # a bad option ends here with argparse's usage message and exit 2
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    configure_logging(args.verbose)
    try:
        check_inputs(args.command_path, args)
        return int(args.handler(args) or EXIT_OK)
    except MedresError as error:
        return report_error(error.one_line(), EXIT_USAGE)
    except KeyboardInterrupt:
        return report_error("interrupted", EXIT_INTERRUPTED, prefix="medres:")
    except OSError as error:
        return report_os_error(error, args.verbose)
    except Exception as error:  # noqa: BLE001  the one place a bug becomes a line and an exit code
        return report_internal_error(error, args.verbose)


def report_error(text: str, code: int, prefix: str = "medres: error:") -> int:
    """Print ``prefix text`` as one line on stderr; returns ``code``."""
    print(f"{prefix} {' '.join(text.split())}", file=sys.stderr)
    return code


def report_os_error(error: OSError, verbose: bool) -> int:
    """The system refused a read or write the inputs check could not foresee: mostly writing the outputs."""
    if verbose:
        traceback.print_exc()
    where = f"{error.filename}: " if error.filename else ""
    return report_error(f"io_error: {where}{error.strerror or error} (disk full? permissions?)", EXIT_INTERNAL_ERROR)


def report_internal_error(error: Exception, verbose: bool) -> int:
    """A bug: one line naming the exception; the traceback only with --verbose."""
    if verbose:
        traceback.print_exc()
    hint = "" if verbose else "; rerun with --verbose for the traceback"
    return report_error(f"{type(error).__name__}: {error}{hint}", EXIT_INTERNAL_ERROR,
                        prefix="medres: internal error:")


def console_main() -> NoReturn:
    """The process's entry point (``python -m medres``, ``torchrun -m medres``): :func:`main`, then exit at once.

    When the command is done (every output written, fsynced and closed), the
    exit handlers that libraries registered run and stdout/stderr are flushed,
    and the process ends without the interpreter tearing down every imported
    module: with torch and MONAI loaded, that teardown is a wait the user
    would sit through after the work is done (``benchmarks/RESULTS.md``).
    """
    code = main()
    atexit._run_exitfuncs()  # what a normal exit runs first (logging, multiprocessing, thread pools)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`medres ... | head`), a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console_main()
