"""Everything decided before the first file is opened: arguments, checkpoint, key, device.

All checks that can fail because of the user's arguments run here, before any
worker starts, and raise a :class:`~medres.errors.MedresError` (``usage``,
``not_found``, ``empty_input``, or the checkpoint's own refusal, e.g.
``unsafe_checkpoint``), so a bad invocation
ends at once with one line, and a good one cannot fail later for a reason
that was knowable at the start.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medres.errors import EmptyInputError, NotFoundError, UsageError
from medres.io.budget import DEFAULT_SIZE_BUDGET
from medres.runtime import PRECISIONS, model_to_channels_last, precision_name
from medres.score.discover import walk_folder
from medres.score.folder import TABLE_FORMATS
from medres.score.privacy import key_fingerprint, load_or_create_key
from medres.score.tasks import CxrTask, task_for_card
from medres.score.worker import WorkerSettings

if TYPE_CHECKING:
    from torch import nn

    from medres.models.card import ModelCard

START_METHODS: tuple[str, ...] = ("fork", "forkserver", "spawn")
SCHEDULES: tuple[str, ...] = ("auto", "alternate", "overlap")


def available_cores() -> int:
    """Cores this process may use, shared among the torchrun processes of this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def resolve_schedule(schedule: str, device: torch.device, workers: int | None) -> tuple[str, int]:
    """How decoding and the model share the machine, and how many decoder workers.

    ``alternate``: decode a batch's files with every core, then run the model
    with every core, in turn. On a CPU whose cores the model already uses, a
    decoder running alongside it leaves one OpenMP thread behind at every
    barrier while the others spin, wasting more than the decoding costs; in
    turns, no core is ever shared. ``overlap``: decode the next files while
    the model runs (a GPU model, or spare cores), half the cores decoding.
    ``auto`` picks ``overlap`` on CUDA or when the model's threads and the
    workers fit the cores, else ``alternate``.
    """
    cores = available_cores()
    if schedule == "auto":
        fits = workers is not None and torch.get_num_threads() + workers <= cores
        schedule = "overlap" if device.type == "cuda" or fits else "alternate"
    if workers is None:
        workers = min(32, cores if schedule == "alternate" else max(1, cores // 2))
    return schedule, workers


@dataclass
class ScoreConfig:
    """Options of one scoring run (what ``medres score`` parses; see its ``--help``)."""

    input_dir: str
    checkpoint: str
    out_dir: str
    batch_size: int = 16
    workers: int | None = None  # None: chosen with the schedule (see resolve_schedule)
    schedule: str = "auto"
    precision: str = "fp32"  # what eval cxr and the app compute; bf16 is faster and moves probabilities
    table_format: str = "csv"
    pseudonym_key: str | None = None
    keep_identifiers: bool = False
    heatmaps: bool = False
    size_budget: int = DEFAULT_SIZE_BUDGET
    reduced_j2k: bool = False
    progress: bool = True
    verbose: bool = False
    start_method: str = "fork" if sys.platform.startswith("linux") else "spawn"  # macOS: fork is unsafe

    def public_arguments(self) -> dict[str, Any]:
        """The options for ``run.json``: the pseudonym key itself is never written."""
        arguments = asdict(self)
        arguments["pseudonym_key"] = "given" if self.pseudonym_key else "stored in OUT_DIR/.pseudonym_key"
        return arguments


@dataclass
class RunSetup:
    """The resolved run: folders, card (and the model, once :func:`load_model` ran), device, key, fingerprint."""

    config: ScoreConfig
    input_dir: Path
    out_dir: Path
    card: ModelCard
    task: CxrTask
    checkpoint_sha256: str
    device: torch.device
    precision: str
    pseudonym_key: bytes
    fingerprint: str
    worker_settings: WorkerSettings
    schedule: str
    workers: int
    model: nn.Module | None = None


def check_arguments(config: ScoreConfig) -> tuple[Path, Path]:
    """Validate the options; returns the absolute input and output folders (the latter created)."""
    input_dir = Path(config.input_dir).absolute()
    if not input_dir.exists():
        raise NotFoundError("the input folder does not exist", path=input_dir)
    if not input_dir.is_dir():
        raise UsageError("the input is a file; give the folder to score", path=input_dir)
    if not os.access(input_dir, os.R_OK | os.X_OK):
        raise UsageError("the input folder cannot be read (permissions)", path=input_dir)
    _check_choice("--precision", config.precision, PRECISIONS)
    _check_choice("--format", config.table_format, TABLE_FORMATS)
    _check_choice("--start-method", config.start_method, START_METHODS)
    _check_choice("--schedule", config.schedule, SCHEDULES)
    if config.batch_size < 1 or (config.workers is not None and config.workers < 1) or config.size_budget < 1:
        raise UsageError("--batch-size, --workers and --size-budget must be at least 1")
    if not Path(config.checkpoint).is_file():
        raise NotFoundError("the checkpoint file does not exist", path=config.checkpoint)
    out_dir = Path(config.out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("the output path exists and is not a folder", path=out_dir)
    if next(walk_folder(input_dir, exclude=out_dir), None) is None:
        raise EmptyInputError("the input folder holds no files to score", path=input_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output folder ({error.strerror})", path=out_dir) from None
    return input_dir, out_dir


def prepare_run(config: ScoreConfig, device: torch.device) -> RunSetup:
    """Check everything and read the card; raises before any file is scored if something is wrong.

    The model itself is loaded later, by :func:`load_model`, once the decoders
    have their first files; a checkpoint whose header and card read fine but
    whose tensors do not fit the architecture is refused then, before any file
    is scored.
    """
    from medres.models.checkpoint import checkpoint_sha256, read_card  # the header only: no architecture code

    input_dir, out_dir = check_arguments(config)
    card = read_card(config.checkpoint)  # refuses pickles and zips before anything is parsed
    task = task_for_card(card)
    sha256 = checkpoint_sha256(config.checkpoint)
    key = load_or_create_key(out_dir, config.pseudonym_key)
    precision = precision_name(device, config.precision)
    fingerprint = run_fingerprint(sha256, key, config, precision)
    settings = WorkerSettings(task=task.name, card_json=card.to_json(), pseudonym_key=key,
                              keep_identifiers=config.keep_identifiers, size_budget=config.size_budget,
                              reduced_j2k=config.reduced_j2k, verbose=config.verbose)
    schedule, workers = resolve_schedule(config.schedule, device, config.workers)
    return RunSetup(config, input_dir, out_dir, card, task, sha256, device, precision, key, fingerprint,
                    settings, schedule, workers)


def load_model(setup: RunSetup) -> None:
    """Load the checkpoint's model onto the run's device in the channels-last layout (``setup.model``)."""
    from medres.models import load_checkpoint

    model = load_checkpoint(setup.config.checkpoint, map_location=setup.device)
    setup.model = model_to_channels_last(model)  # oneDNN's fast layout, bf16 above all


def run_fingerprint(checkpoint_sha: str, key: bytes, config: ScoreConfig, precision: str) -> str:
    """What, besides a file's identity, decides its journaled outcome; part of every journal key.

    A different checkpoint, pseudonym key, identifier setting, precision, size
    budget or decoding mode gives different rows, so none of the old records
    are reused.
    """
    settings = {"checkpoint_sha256": checkpoint_sha, "key": key_fingerprint(key), "precision": precision,
                "keep_identifiers": config.keep_identifiers, "size_budget": config.size_budget,
                "reduced_j2k": config.reduced_j2k}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{option} {value!r} is not one of {', '.join(choices)}")


__all__ = ["ScoreConfig", "RunSetup", "check_arguments", "load_model", "prepare_run", "resolve_schedule"]
