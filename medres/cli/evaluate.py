"""``medres eval TASK``: evaluate a trained model on a data set split and write a report.

Each task is one entry of :data:`TASKS`: a function that adds the task's
parser to the ``eval`` sub-parsers and sets its ``handler``. To add a task
(e.g. ``eval seg``), write ``register_seg(tasks)`` in this module or another
one and add it to ``TASKS``; the ``eval`` parser itself stays as it is.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

TaskRegistrar = Callable[[argparse._SubParsersAction], None]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a trained model and write a report",
                                   description="Evaluate a trained model on a data set split.")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for register_task in TASKS.values():
        register_task(tasks)


def register_cxr(tasks: argparse._SubParsersAction) -> None:
    cxr = tasks.add_parser(
        "cxr", help="per-class AUROC/AUPRC with patient-level CIs, thresholds, calibration, subgroups",
        description="Evaluate a chest X-ray classifier on a ChestX-ray14 split: per-class AUROC and AUPRC with "
        "patient-level bootstrap CIs, thresholds chosen on the val split (written into the checkpoint's card "
        "unless --no-write-thresholds), calibration, subgroups by sex/age/view, and published AUROCs side by "
        "side. Writes report.md, metrics.json, roc_curves.png, reliability.png and predictions.csv to --out. "
        "The split settings are read from config.json next to the checkpoint when present.")
    cxr.add_argument("--checkpoint", type=Path, required=True, help="a .safetensors checkpoint (e.g. best.safetensors)")
    cxr.add_argument("--data", type=Path, required=True, help="ChestX-ray14 folder (NIH layout)")
    cxr.add_argument("--split", choices=("train", "val", "test"), default="test",
                     help="split to evaluate (default: %(default)s)")
    cxr.add_argument("--out", type=Path, required=True, help="report folder")
    cxr.add_argument("--cache", type=Path, help="cache from `medres prepare cxr` (default: decode PNGs)")
    cxr.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default: %(default)s)")
    cxr.add_argument("--batch-size", type=int, default=64)
    cxr.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    cxr.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32")
    cxr.add_argument("--no-write-thresholds", dest="write_thresholds", action="store_false",
                     help="leave the checkpoint file untouched")
    cxr.add_argument("--val-fraction", type=float, help="override the training run's val fraction")
    cxr.add_argument("--split-seed", type=int, help="override the training run's split seed")
    cxr.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    cxr.set_defaults(handler=run_cxr)


def run_cxr(args: argparse.Namespace) -> int:
    from medres.errors import UsageError
    from medres.metrics.cxr_report import CxrEvalConfig, evaluate_cxr

    if args.n_boot < 1 or args.batch_size < 1 or args.workers < 0:
        raise UsageError("--n-boot and --batch-size must be positive and --workers at least 0")
    config = CxrEvalConfig(
        checkpoint=str(args.checkpoint), data=str(args.data), out=str(args.out), split=args.split,
        cache=str(args.cache) if args.cache else None, n_boot=args.n_boot, batch_size=args.batch_size,
        workers=args.workers, precision=args.precision, write_thresholds=args.write_thresholds,
        val_fraction=args.val_fraction, split_seed=args.split_seed, bootstrap_seed=args.seed)
    metrics = evaluate_cxr(config)
    summary, setup = metrics["summary"], metrics["setup"]
    low, high = summary["mean_auroc_ci"]
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    mean = "undefined" if summary["mean_auroc"] is None else f"{summary['mean_auroc']:.3f}{interval}"
    print(f"{args.split}: {setup['evaluated']['n_images']} images, mean AUROC {mean}"
          + (" (SYNTHETIC DATA)" if setup["data"]["synthetic"] else ""))
    print("thresholds from the val split " + ("written into " if setup["checkpoint"]["thresholds_written"]
                                              else "not written to ") + str(args.checkpoint))
    print(f"report: {args.out / 'report.md'}")
    return 0


def register_seg(tasks: argparse._SubParsersAction) -> None:
    from medres.cli.segment import add_window_arguments

    seg = tasks.add_parser(
        "seg", help="Dice, HD95 and surface Dice in mm per case and label",
        description="Evaluate a segmentation checkpoint (or a folder of existing predictions) on every labelled "
        "case of an MSD or nnU-Net folder: Dice, HD95 (mm) and normalized surface Dice (mm tolerance) per case and "
        "label, mean +- sd. Writes report.md and metrics.json to --out.")
    seg.add_argument("--checkpoint", type=Path, help="segmentation checkpoint (.safetensors)")
    seg.add_argument("--predictions", type=Path, help="instead of a checkpoint: <case>.nii.gz label files")
    seg.add_argument("--data", type=Path, required=True, help="MSD or nnU-Net folder with labelsTr")
    seg.add_argument("--out", type=Path, required=True, help="report folder")
    seg.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance (default: %(default)s)")
    add_window_arguments(seg)
    seg.set_defaults(handler=run_seg)


def run_seg(args: argparse.Namespace) -> int:
    from medres.cli.segment import window_settings
    from medres.segment.evaluation import SegEvalConfig, evaluate_segmentations

    config = SegEvalConfig(data=str(args.data), out=str(args.out), tolerance_mm=args.tolerance_mm,
                           checkpoint=str(args.checkpoint) if args.checkpoint else None,
                           predictions=str(args.predictions) if args.predictions else None,
                           window=window_settings(args, progress=False))
    results = evaluate_segmentations(config)
    for name, values in results["per_label"].items():
        print(f"{name}: Dice {values['dice']['mean']:.4f} ({values['cases']} cases)")
    print(f"mean Dice {results['mean_dice']:.4f}; report: {args.out / 'report.md'}")
    return 0


TASKS: dict[str, TaskRegistrar] = {"cxr": register_cxr, "seg": register_seg}
"""Task name -> function adding its parser to ``medres eval``; add new tasks here."""
