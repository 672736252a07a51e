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
        "patient-level bootstrap CIs, thresholds chosen on the val split, calibration, subgroups by sex/age/view, "
        "and published AUROCs side by side. Writes report.md, metrics.json, roc_curves.png, reliability.png, "
        "predictions.csv and calibrated.safetensors (the same weights, with the val-split thresholds in its card: "
        "score with this file) to --out. When the split has images boxed in BBox_List_2017.csv, also Grad-CAM "
        "localisation (pointing game, IoBB, confidence drop; localisation.csv, localisation_gallery.png). The "
        "evaluated checkpoint is only read, never changed. The split settings are read from config.json next to "
        "the checkpoint when present.")
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
    cxr.add_argument("--no-calibrated-checkpoint", "--no-write-thresholds", dest="write_calibrated",
                     action="store_false", help="do not write OUT/calibrated.safetensors")
    cxr.add_argument("--val-fraction", type=float, help="override the training run's val fraction")
    cxr.add_argument("--split-seed", type=int, help="override the training run's split seed")
    cxr.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    cxr.add_argument("--localisation", action=argparse.BooleanOptionalAction, default=None,
                     help="Grad-CAM against BBox_List_2017.csv: pointing game, IoBB, confidence drop per label, "
                     "a gallery (default: on when the evaluated split has boxed images)")
    cxr.add_argument("--cam-method", choices=("gradcam", "gradcam++"), default="gradcam",
                     help="map method for --localisation (default: %(default)s)")
    cxr.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    cxr.set_defaults(handler=run_cxr)


def run_cxr(args: argparse.Namespace) -> int:
    from medres.errors import UsageError
    from medres.evaluate.cxr import CxrEvalConfig, evaluate_cxr

    if args.n_boot < 1 or args.batch_size < 1 or args.workers < 0:
        raise UsageError("--n-boot and --batch-size must be positive and --workers at least 0")
    config = CxrEvalConfig(
        checkpoint=str(args.checkpoint), data=str(args.data), out=str(args.out), split=args.split,
        cache=str(args.cache) if args.cache else None, n_boot=args.n_boot, batch_size=args.batch_size,
        workers=args.workers, precision=args.precision, write_calibrated=args.write_calibrated,
        val_fraction=args.val_fraction, split_seed=args.split_seed, bootstrap_seed=args.seed, progress=args.progress,
        localisation=args.localisation, cam_method=args.cam_method)
    metrics = evaluate_cxr(config)
    summary, setup = metrics["summary"], metrics["setup"]
    low, high = summary["mean_auroc_ci"]
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    mean = "undefined" if summary["mean_auroc"] is None else f"{summary['mean_auroc']:.3f}{interval}"
    print(f"{args.split}: {setup['evaluated']['n_images']} images, mean AUROC {mean}"
          + (" (SYNTHETIC DATA)" if setup["data"]["synthetic"] else ""))
    calibrated = setup["calibrated_checkpoint"]
    print(f"checkpoint read (unchanged): {args.checkpoint} (SHA-256 {setup['checkpoint']['sha256']})")
    if calibrated["written"]:
        print(f"calibrated checkpoint (val-split thresholds): {calibrated['path']} (SHA-256 {calibrated['sha256']})")
        print(f"score with it: medres score DICOM_FOLDER --checkpoint {calibrated['path']} --out SCORES_FOLDER")
    else:
        print("calibrated checkpoint not written (--no-calibrated-checkpoint)")
    print_localisation(metrics["localisation"])
    print(f"report: {args.out / 'report.md'}")
    return 0


def print_localisation(localisation: dict) -> None:
    """One line: the pointing game beside its centre baseline, or why localisation was not measured."""
    if not localisation["measured"]:
        print(f"localisation not measured: {localisation['reason']}")
        return
    overall = localisation["overall"]
    print(f"localisation ({localisation['method']}): pointing game {overall['pointing_game']:.3f} "
          f"(centre baseline {overall['centre_baseline']:.3f}), mean IoBB {overall['mean_iobb']:.3f} "
          f"over {overall['n_boxes']} boxes")


def register_seg(tasks: argparse._SubParsersAction) -> None:
    from medres.cli.segment import add_window_arguments

    seg = tasks.add_parser(
        "seg", help="Dice, HD95 and surface Dice in mm per case and label",
        description="Evaluate a segmentation checkpoint (or a folder of existing predictions) on the labelled "
        "cases of an MSD or nnU-Net folder: Dice, HD95 (mm) and normalized surface Dice (mm tolerance) per case and "
        "label, mean +- sd. By default only the cases the training run did not train on are evaluated (its "
        "split.json, found beside the checkpoint); without a split file every case is, and the report says so. "
        "Writes report.md and metrics.json to --out. Research use only, not for diagnosis.")
    seg.add_argument("--checkpoint", type=Path, help="segmentation checkpoint (.safetensors)")
    seg.add_argument("--predictions", type=Path, help="instead of a checkpoint: <case>.nii.gz label files")
    seg.add_argument("--data", type=Path, required=True, help="MSD or nnU-Net folder with labelsTr")
    seg.add_argument("--out", type=Path, required=True, help="report folder")
    seg.add_argument("--tolerance-mm", type=float, default=2.0, help="surface Dice tolerance (default: %(default)s)")
    seg.add_argument("--cases", choices=("held-out", "all"),
                     help="held-out: only cases the run did not train on (needs its split.json); all: every labelled "
                     "case, each tagged with its split (default: held-out when a split file is found, else all)")
    seg.add_argument("--split-file", type=Path,
                     help="the training run's split.json (default: the one beside --checkpoint)")
    seg.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_window_arguments(seg)
    seg.set_defaults(handler=run_seg)


def run_seg(args: argparse.Namespace) -> int:
    from medres.cli.segment import window_settings
    from medres.evaluate.seg import SegEvalConfig, evaluate_segmentations, label_summary_lines

    config = SegEvalConfig(data=str(args.data), out=str(args.out), tolerance_mm=args.tolerance_mm,
                           checkpoint=str(args.checkpoint) if args.checkpoint else None,
                           predictions=str(args.predictions) if args.predictions else None,
                           window=window_settings(args, progress=False), progress=args.progress,
                           cases=args.cases, split_file=str(args.split_file) if args.split_file else None)
    results = evaluate_segmentations(config)
    if results["synthetic"]:
        print(f"SYNTHETIC DATA: {results['synthetic']}")
    print(results["selection"]["note"])
    for line in label_summary_lines(results):
        print(line)
    print(f"mean Dice {results['mean_dice']:.4f}; report: {args.out / 'report.md'}")
    return 0


TASKS: dict[str, TaskRegistrar] = {"cxr": register_cxr, "seg": register_seg}
"""Task name -> function adding its parser to ``medres eval``; add new tasks here."""
