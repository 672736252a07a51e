"""``medres train cxr``: train a chest X-ray classifier (CheXNet recipe by default); ``seg``/``vol``: train_volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

from medres.cli import train_volumes
from medres.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    cxr = tasks.add_parser(
        "cxr", help="train a 14-label chest X-ray classifier on ChestX-ray14",
        description="Train on a ChestX-ray14 folder (NIH layout). Defaults are the CheXNet recipe: Adam 1e-3, "
        "batch 16, LR /10 on a validation-loss plateau, best model by validation mean AUROC, early stopping. "
        "Multi-GPU/multi-node: torchrun --nproc_per_node N -m medres train cxr ...")
    cxr.add_argument("--data", type=Path, help="ChestX-ray14 folder")
    cxr.add_argument("--out", type=Path, help="run folder (checkpoints, metrics.csv, config.json)")
    cxr.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a killed run exactly where it stopped")
    cxr.add_argument("--model", default="chexnet_resnet50", help="registry name (default: %(default)s)")
    cxr.add_argument("--cache", type=Path, help="cache from `medres prepare cxr` (default: decode PNGs)")
    cxr.add_argument("--epochs", type=int, default=10)
    cxr.add_argument("--batch-size", type=int, default=16)
    cxr.add_argument("--lr", type=float, default=1e-3)
    cxr.add_argument("--input-size", type=int, help="override the model's input size")
    cxr.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                     help="mixed precision: auto = bf16 on capable CPUs, bf16/fp16 on CUDA")
    cxr.add_argument("--channels-last", action="store_true")
    cxr.add_argument("--grad-accumulation", type=int, default=1)
    cxr.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    cxr.add_argument("--seed", type=int, default=0)
    cxr.add_argument("--deterministic", action="store_true")
    cxr.add_argument("--class-weighted", action="store_true", help="BCE weighted by negatives/positives per label")
    cxr.add_argument("--no-augment", dest="augment", action="store_false")
    cxr.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs")
    cxr.add_argument("--checkpoint-every", type=int, default=0, help="also save resumable state every N steps")
    cxr.add_argument("--val-fraction", type=float, default=0.1)
    cxr.add_argument("--init", metavar="imagenet|none|FILE",
                     help="initial weights. imagenet: torchvision's published ImageNet file for the model, from "
                     "$TORCH_HOME/hub/checkpoints (downloaded there when online; the default for the CheXNet-recipe "
                     "models chexnet_densenet121, chexnet_resnet50/101/152, chexnet_wide_resnet50); none: random "
                     "weights (the default for the others); FILE: any file `medres import-weights` reads (read "
                     "without running it) or a medres checkpoint (strict key/shape check). MEDRES_OFFLINE=1 never "
                     "downloads")
    cxr.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    cxr.set_defaults(handler=run_cxr)
    train_volumes.register_seg(tasks)
    train_volumes.register_vol(tasks)


def run_cxr(args: argparse.Namespace) -> int:
    from medres.models.pretrained import resolve_initialisation
    from medres.train.cxr import CxrTrainConfig, train_cxr
    from medres.train.loop import TrainConfig

    if args.resume:
        config_path = args.resume / "config.json"
        if not config_path.is_file():
            raise UsageError("no config.json: not a medres run folder", path=args.resume)
        config = CxrTrainConfig.from_json(config_path.read_text())
        run_dir = train_cxr(config, resume=True)
    else:
        if args.data is None or args.out is None:
            raise UsageError("--data and --out are required (or --resume RUN_DIR)")
        # A missing ImageNet file (or an unreadable --init FILE) stops the run here, before any data is read.
        init = resolve_initialisation(args.init, args.model, args.progress)
        loop = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                           precision=args.precision, channels_last=args.channels_last,
                           grad_accumulation=args.grad_accumulation, workers=args.workers, seed=args.seed,
                           deterministic=args.deterministic, early_stopping_patience=args.patience,
                           checkpoint_every_steps=args.checkpoint_every, progress=args.progress)
        config = CxrTrainConfig(data=str(args.data), out=str(args.out), model=args.model,
                                cache=str(args.cache) if args.cache else None, val_fraction=args.val_fraction,
                                augment=args.augment, class_weighted=args.class_weighted,
                                init=init, input_size=args.input_size, loop=loop)
        run_dir = train_cxr(config)
    print(f"run folder: {run_dir} (best.safetensors, last.safetensors, metrics.csv)")
    return 0
