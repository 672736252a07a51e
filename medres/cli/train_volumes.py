"""``medres train seg`` and ``medres train vol``: 3D segmentation and volume classification.

Registered by :mod:`medres.cli.train` onto its task sub-parsers; parsing only,
the work is in :mod:`medres.train.segmentation` and
:mod:`medres.train.volume_classifier`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medres.errors import UsageError


def _add_common(parser: argparse.ArgumentParser, default_model: str, default_epochs: int, default_lr: float,
                default_batch: int) -> None:
    parser.add_argument("--data", type=Path, help="MSD or nnU-Net raw folder (dataset.json, imagesTr/, labelsTr/)")
    parser.add_argument("--out", type=Path, help="run folder (checkpoints, metrics.csv, config.json)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a killed run exactly where it stopped")
    parser.add_argument("--model", default=default_model, help="registry name (default: %(default)s)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="target spacing in mm, RAS axis order (default: the training cases' median)")
    parser.add_argument("--epochs", type=int, default=default_epochs)
    parser.add_argument("--batch-size", type=int, default=default_batch)
    parser.add_argument("--lr", type=float, default=default_lr)
    parser.add_argument("--lr-schedule", choices=("poly", "plateau"),
                        help="poly: nnU-Net's decay to zero over the epochs; plateau: lowered when the validation loss "
                        "stalls (default: the task's)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                        help="mixed precision: auto = bf16 on capable CPUs, bf16/fp16 on CUDA")
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience in epochs")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also save resumable state every N steps")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--cache", type=Path, help="preprocessing cache folder (default: RUN_DIR/preprocessed)")
    parser.add_argument("--init", metavar="none|FILE",
                        help="initial weights: none (random, the default), a medres checkpoint, or (train vol) a "
                        "MedicalNet file such as resnet_18_23dataset.pth, told from its keys and read without "
                        "running it")
    parser.add_argument("--mirror-axes", type=int, nargs="*", metavar="AXIS",
                        help="mirroring augmentation axes (0 1 2 = R-L, A-P, S-I)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def register_seg(tasks: argparse._SubParsersAction) -> None:
    seg = tasks.add_parser(
        "seg", help="train a 3D residual U-Net on an MSD / nnU-Net folder",
        description="Train a 3D segmentation model on random patches (1/3 centred on labels), Dice + cross-entropy, "
        "validated by sliding-window mean Dice on held-out cases, learning rate decayed to zero by nnU-Net's poly "
        "schedule. Volumes are resampled to the training cases' "
        "median spacing and normalised as nnU-Net does (CT: foreground 0.5/99.5 percentiles, then z-score; MR: "
        "z-score per image); both go into the model card. Multi-GPU: torchrun --nproc_per_node N -m medres train seg")
    _add_common(seg, "resunet3d", 50, 3e-4, 2)
    seg.add_argument("--patch", type=int, nargs=3, metavar=("X", "Y", "Z"), help="patch size (default: the model's)")
    seg.add_argument("--patches-per-epoch", type=int, default=250)
    seg.add_argument("--foreground-fraction", type=float, default=1 / 3)
    seg.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap for validation")
    seg.set_defaults(handler=run_seg)


def register_vol(tasks: argparse._SubParsersAction) -> None:
    vol = tasks.add_parser(
        "vol", help="train a 3D ResNet volume classifier on volume-level labels",
        description="Train a 3D ResNet (MedicalNet layout) on whole volumes with labels from a CSV next to the "
        "images (columns: case, then one 0/1 column per label; default DATA/volume_labels.csv), validated by mean "
        "AUROC.")
    _add_common(vol, "resnet3d_18", 20, 1e-3, 4)
    vol.add_argument("--labels", type=Path, help="volume label CSV (default: DATA/volume_labels.csv)")
    vol.add_argument("--input-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                     help="pad/crop size at the target spacing (default: the model's)")
    vol.set_defaults(handler=run_vol)


def _loop_config(args: argparse.Namespace, defaults):
    defaults.epochs, defaults.batch_size, defaults.learning_rate = args.epochs, args.batch_size, args.lr
    defaults.precision, defaults.workers, defaults.seed = args.precision, args.workers, args.seed
    defaults.deterministic, defaults.early_stopping_patience = args.deterministic, args.patience
    defaults.checkpoint_every_steps, defaults.progress = args.checkpoint_every, args.progress
    defaults.lr_schedule = args.lr_schedule or defaults.lr_schedule
    return defaults


def _resumed_config(config_class, run_dir: Path):
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UsageError("no config.json: not a medres run folder", path=run_dir)
    return config_class.from_json(config_path.read_text())


def _common_fields(args: argparse.Namespace) -> dict:
    from medres.models.pretrained import resolve_initialisation

    if args.data is None or args.out is None:
        raise UsageError("--data and --out are required (or --resume RUN_DIR)")
    fields = {"data": str(args.data), "out": str(args.out), "model": args.model, "val_fraction": args.val_fraction,
              "spacing": tuple(args.spacing) if args.spacing else None,
              "cache": str(args.cache) if args.cache else None}
    if args.mirror_axes is not None:
        if not set(args.mirror_axes) <= {0, 1, 2}:
            raise UsageError(f"--mirror-axes takes spatial axes 0, 1, 2 (R-L, A-P, S-I), got {args.mirror_axes}")
        fields["mirror_axes"] = tuple(args.mirror_axes)
    # The --init file is read (without running it) before any data, so a bad one stops the run at once.
    fields["init"] = resolve_initialisation(args.init, args.model, args.progress)
    return fields


def run_seg(args: argparse.Namespace) -> int:
    from medres.train.segmentation import SegTrainConfig, default_seg_loop, train_seg

    if args.resume:
        run_dir = train_seg(_resumed_config(SegTrainConfig, args.resume), resume=True)
    else:
        config = SegTrainConfig(**_common_fields(args), patch_size=tuple(args.patch) if args.patch else None,
                                patches_per_epoch=args.patches_per_epoch,
                                foreground_fraction=args.foreground_fraction, overlap=args.overlap,
                                loop=_loop_config(args, default_seg_loop()))
        run_dir = train_seg(config)
    print(f"run folder: {run_dir} (best.safetensors, last.safetensors, metrics.csv)")
    return 0


def run_vol(args: argparse.Namespace) -> int:
    from medres.train.volume_classifier import VolTrainConfig, default_vol_loop, train_vol

    if args.resume:
        run_dir = train_vol(_resumed_config(VolTrainConfig, args.resume), resume=True)
    else:
        config = VolTrainConfig(**_common_fields(args), labels=str(args.labels) if args.labels else None,
                                input_size=tuple(args.input_size) if args.input_size else None,
                                loop=_loop_config(args, default_vol_loop()))
        run_dir = train_vol(config)
    print(f"run folder: {run_dir} (best.safetensors, last.safetensors, metrics.csv)")
    return 0
