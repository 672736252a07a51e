"""``medres app``: start the Streamlit review app on a root folder and a checkpoint."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from medres.cli.inputs import require_checkpoint, require_folder
from medres.errors import NotFoundError, UsageError

APP_RELATIVE_PATH = Path("app") / "review.py"  # inside the medres package
STOP_TIMEOUT_S = 10
TASK_DESCRIPTIONS = {"cxr": "chest X-ray classifier", "seg": "segmentation model", "vol": "volume classifier"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="review X-rays (Grad-CAM) and CT/MRI (segmentations) in a browser",
        description="Start the Streamlit review app. Only files under --root are ever read (plus uploads). "
        "Research use only, not for diagnosis.")
    parser.add_argument("--root", type=Path, required=True, help="folder the app may browse")
    parser.add_argument("--checkpoint", type=Path, required=True, help="chest X-ray classifier (.safetensors)")
    parser.add_argument("--seg-checkpoint", type=Path, help="segmentation model (.safetensors), optional")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--address", default="localhost", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--upload-limit-mb", type=int, default=200)
    parser.set_defaults(handler=run_app)


def app_script() -> Path:
    """The review app's Streamlit page, ``medres/app/review.py``: it ships inside the package.

    Raises:
        NotFoundError: The file is missing from the installed package (a broken install).
    """
    script = Path(__file__).resolve().parents[1] / APP_RELATIVE_PATH
    if not script.is_file():
        raise NotFoundError(f"the review app's page is missing from the installed medres ({script}); "
                            "reinstall medres")
    return script


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for the parsed arguments."""
    command = [sys.executable, "-m", "streamlit", "run", str(app_script()),
               "--server.port", str(args.port), "--server.address", args.address,
               "--server.maxUploadSize", str(args.upload_limit_mb), "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal",
               "--", "--root", str(args.root.resolve()), "--checkpoint", str(args.checkpoint.resolve()),
               "--upload-limit-mb", str(args.upload_limit_mb)]
    if args.seg_checkpoint is not None:
        command += ["--seg-checkpoint", str(args.seg_checkpoint.resolve())]
    return command


def check_app_arguments(args: argparse.Namespace) -> None:
    """Check what ``medres app`` was given, without starting Streamlit; raises the first problem found.

    The root must be a folder with files in it; each checkpoint must be
    safetensors (a pickle or a text file is refused by name), hold a model of
    the right task (a chest X-ray classifier for ``--checkpoint``, a
    segmentation model for ``--seg-checkpoint``) and load into that model, as
    the app itself will load it. So a wrong argument ends here with one line
    and exit code 2, instead of a server that starts and then shows errors.

    Raises:
        MedresError: ``not_found``, ``empty_input``, ``usage`` (a file for the
            root, a checkpoint of another task), ``not_safetensors``,
            ``unsafe_checkpoint``, ``checkpoint_mismatch`` ...
    """
    for option, checkpoint, task in (("--checkpoint", args.checkpoint, "cxr"),
                                     ("--seg-checkpoint", args.seg_checkpoint, "seg")):
        if checkpoint is not None:
            check_app_checkpoint(checkpoint, option, task)
    require_folder(args.root, "--root")
    app_script()


def check_app_checkpoint(checkpoint: Path, option: str, task: str) -> None:
    """The checkpoint's card names a ``task`` model, and the app's own loader loads it."""
    from medres.app.analysis import load_model
    from medres.models import read_card

    require_checkpoint(checkpoint, option)
    card = read_card(checkpoint)
    if card.task != task:
        raise UsageError(f"{option} needs a {TASK_DESCRIPTIONS[task]} checkpoint, and this one holds a "
                         f"{TASK_DESCRIPTIONS.get(card.task, repr(card.task))} ({card.name})", path=checkpoint)
    load_model(checkpoint, task=task)


def run_app(args: argparse.Namespace) -> int:
    check_app_arguments(args)
    command = streamlit_command(args)
    print(f"medres review app on http://{args.address}:{args.port} (Ctrl+C to stop). "
          "Research use only, not for diagnosis.")
    return run_until_stopped(command)


def run_until_stopped(command: list[str]) -> int:
    """Run the server; stop it too when this process is interrupted or terminated.

    SIGTERM is turned into ``SystemExit`` so the ``finally`` below runs: otherwise
    a service manager stopping ``medres app`` would leave the Streamlit server behind.
    """
    signal.signal(signal.SIGTERM, _exit_on_signal)
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        return process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()


def _exit_on_signal(signal_number: int, _frame: object) -> None:
    raise SystemExit(128 + signal_number)
