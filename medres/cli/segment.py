"""``medres segment``: segment one CT/MRI volume (NIfTI file or DICOM series folder) with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """Sliding-window options shared by ``segment`` and ``eval seg``."""
    parser.add_argument("--overlap", type=float, default=0.5, help="window overlap, 0..<1 (default: %(default)s)")
    parser.add_argument("--sw-batch-size", type=int, default=4,
                        help="windows per forward pass (default: %(default)s; halved automatically on GPU OOM)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto = bf16 on CPUs with native bf16 and on CUDA (default: %(default)s)")
    parser.add_argument("--tta", action="store_true", help="average over mirrored copies (up to 8x slower)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def window_settings(args: argparse.Namespace, progress: bool = True):
    from medres.errors import UsageError
    from medres.segment import SlidingWindowSettings

    if not 0.0 <= args.overlap < 1.0 or args.sw_batch_size < 1:
        raise UsageError("--overlap must be in [0, 1) and --sw-batch-size at least 1")
    return SlidingWindowSettings(overlap=args.overlap, sw_batch_size=args.sw_batch_size, precision=args.precision,
                                 device=args.device, tta=args.tta, progress=progress)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment a CT/MRI volume with a trained 3D model",
        description="Segment a NIfTI volume or a DICOM series folder. Writes OUT/segmentation.nii.gz on the "
        "input's grid (for a NIfTI input: its exact affine and voxel order), OUT/volumes.json (mL per label, settings, "
        "timings: start-up moments from the process start, read, inference, writing; --verbose prints them) and, "
        "with --dicom-seg, OUT/segmentation.dcm (a DICOM SEG referencing the series). Research use only.")
    parser.add_argument("input", type=Path, help="NIfTI file or DICOM series folder")
    parser.add_argument("--checkpoint", type=Path, required=True, help="segmentation checkpoint (.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--dicom-seg", action="store_true", help="also write a DICOM SEG (DICOM series input only)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_window_arguments(parser)
    parser.set_defaults(handler=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    from medres.segment import SegmentConfig, segment_to_folder

    config = SegmentConfig(input=str(args.input), checkpoint=str(args.checkpoint), out=str(args.out),
                           dicom_seg=args.dicom_seg, window=window_settings(args, progress=args.progress))
    outputs = segment_to_folder(config)
    for note in outputs.notes:
        print(f"note: {note}")
    print(f"segmentation: {outputs.nifti}")
    if outputs.dicom_seg is not None:
        print(f"DICOM SEG: {outputs.dicom_seg}")
    volumes = ", ".join(f"{name} {value:.1f} mL" for name, value in outputs.volumes_ml.items())
    print(f"volumes: {volumes} ({outputs.volumes_json})")
    if args.verbose:
        from medres.timing import describe

        print(describe(outputs.timings))
    return 0
