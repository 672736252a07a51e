"""medres sliding-window inference versus MONAI's defaults, same model and volume, side by side.

    python benchmarks/bench_segment.py [--size 192 192 96] [--repeats 3] [--checkpoint CKPT] [--quick]
                                       [--whole-process-only]

Speed: model ``resunet3d`` (untrained, seed 0; weights do not change the
time), 96^3 windows, a synthetic abdominal CT phantom on the given grid.
Reference: ``monai.inferers.sliding_window_inference`` with its defaults
(``sw_batch_size=1``, ``overlap=0.25``, constant blending, fp32). medres:
``medres.inference.sliding_window_logits`` as ``medres segment`` runs
it (4 windows per batch, ``overlap=0.5``, Gaussian blending, bf16 autocast in
the channels-last layout where the CPU supports bf16), plus the same in fp32,
and MONAI at batch 1 in fp32 with medres's overlap and blending (the same
arithmetic as medres, without its speed-ups). Runs alternate so machine noise
hits all alike; figures are ratios of medians. All share one model: medres
runs bf16 windows through a channels-last copy and leaves the model as it is.

Agreement needs trained weights (an untrained network's classes are tied and
any rounding flips its argmax): ``resunet3d_tiny`` is trained here through
``medres train seg`` (its defaults: Dice + CE, nnU-Net's poly learning-rate
decay) on 12 phantoms, 80 epochs of 60 patches, at 2.5 mm with 64x64x48
patches (or ``--checkpoint``). Each window then sees 160 x 160 x 120 mm, most
of the phantom's 200 mm width, as nnU-Net's patches cover most of an abdomen;
windows still overlap by 48 of 64 voxels along R-L and 36 of 48 along S-I, so
the blending matters. Gaussian and constant blending disagree only where
windows overlap and the model's windows disagree on an organ's boundary, so
the agreement follows how consistent the model is there; the spleen, the
smallest organ (about 50 mL), is the most sensitive. The other recipes tried
and the spread over training runs are in ``benchmarks/RESULTS.md``. Then 4
held-out phantoms are segmented by ``segment_image`` (exactly ``medres
segment``) and by MONAI on the same prepared volume, both resampled onto the
input grid; Dice per organ between the outputs and against the ground truth.

Whole process, as the user waits for it: the ``medres segment`` command
against ``plain_segment.py`` (nibabel -> z-score -> ``sliding_window_inference``
with MONAI's defaults -> argmax -> NIfTI), each as its own process,
alternating, on a 256 x 256 x 192 phantom CT at 1.5 mm (gzipped int16 NIfTI)
and on a 96^3 one (where start-up dominates), same untrained ``resunet3d``,
with the timing breakdown ``volumes.json`` records; also ``medres segment
--overlap 0.25`` (MONAI's overlap), to show what the window count costs.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from timing import time_alternating
from whole_process import (
    ProcessVariant,
    breakdown_text,
    compare_processes,
    medres_command,
    print_table,
    ratios,
)

from medres.cli.main import main as medres_cli
from medres.data.volumes import load_volume_dataset
from medres.inference import sliding_window_logits
from medres.io import read_image
from medres.metrics import dice
from medres.models import create_model, load_checkpoint, save_checkpoint
from medres.runtime import resolve_precision
from medres.segment.labels import probabilities_to_labels, segment_image
from medres.synthetic.phantoms import (
    PHANTOM_LABELS,
    centred_affine,
    make_ct_phantoms,
    random_anatomy,
    voxel_centres_ras,
)
from medres.train.segmentation import default_seg_loop
from medres.transforms.volume import normalize_intensities, prepare_volume

SPACING_MM = 1.5
UNTRAINED_CT = {"kind": "per_channel", "channels": [{"kind": "ct_clip_zscore", "clip_low": -100.0,
                                                     "clip_high": 800.0, "mean": 80.0, "std": 150.0}]}
AGREEMENT_SPACING_MM, AGREEMENT_PATCH = "2.5", ("64", "64", "48")  # windows of 160 x 160 x 120 mm
TRAINING_PHANTOMS, PATCHES_PER_EPOCH = 12, 60
TRAINING_ARGS = ["--model", "resunet3d_tiny", "--spacing", *[AGREEMENT_SPACING_MM] * 3, "--patch", *AGREEMENT_PATCH,
                 "--patches-per-epoch", str(PATCHES_PER_EPOCH), "--lr", "2e-3", "--mirror-axes", "--patience", "100",
                 "--no-progress"]
MONAI_DEFAULTS = "MONAI defaults (sw_batch_size 1, overlap 0.25, constant, fp32)"
MONAI_SAME_MATHS = "MONAI, medres's overlap and blending (sw_batch_size 1, overlap 0.5, gaussian, fp32)"
MEDRES_FP32 = "medres, fp32 (4 per batch, overlap 0.5, gaussian)"
MEDRES_DEFAULT = "medres default (4 per batch, overlap 0.5, gaussian, auto precision)"
CPU = torch.device("cpu")
WHOLE_PROCESS_SIZES = ((96, 96, 96), (256, 256, 192))  # start-up dominates / the volume
HERE = Path(__file__).resolve().parent


def phantom_ct(size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Hounsfield units of the benchmark's phantom at 1.5 mm on a grid centred on it, and the grid's affine."""
    affine = centred_affine(size, SPACING_MM)
    hounsfield, _ = random_anatomy(np.random.default_rng(0), splenomegaly=False).sample(
        voxel_centres_ras(affine, size), np.random.default_rng(1))
    return hounsfield, affine


def phantom_volume(size: tuple[int, int, int]) -> torch.Tensor:
    """A ``(1, X, Y, Z)`` normalised synthetic abdominal CT at 1.5 mm, centred on the phantom."""
    hounsfield, _ = phantom_ct(size)
    return torch.from_numpy(normalize_intensities(hounsfield[None].astype(np.float32), UNTRAINED_CT))


def inference_variants(model: torch.nn.Module,
                       roi: tuple[int, ...]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Each way of turning a prepared ``(C, X, Y, Z)`` volume into logits ``(K, X, Y, Z)``."""
    return {
        MONAI_DEFAULTS: lambda volume: sliding_window_inference(volume[None], roi, 1, model)[0],
        MONAI_SAME_MATHS: lambda volume: sliding_window_inference(volume[None], roi, 1, model, overlap=0.5,
                                                                  mode="gaussian")[0],
        MEDRES_FP32: lambda volume: sliding_window_logits(model, volume, roi, CPU, 4, 0.5, "fp32"),
        MEDRES_DEFAULT: lambda volume: sliding_window_logits(model, volume, roi, CPU, 4, 0.5, "auto"),
    }


def train_phantom_model(work: Path, epochs: int) -> Path:
    """``resunet3d_tiny`` trained through ``medres train seg`` on the training phantoms; its best checkpoint."""
    data = make_ct_phantoms(work / "phantoms_train", TRAINING_PHANTOMS, seed=11)
    run = work / "run"
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the Markdown report
        code = medres_cli(["train", "seg", "--data", str(data), "--out", str(run), "--epochs", str(epochs),
                           *TRAINING_ARGS])
    if code != 0:
        raise SystemExit("training the phantom model failed")
    return run / "best.safetensors"


@torch.no_grad()
def held_out_labels(model: torch.nn.Module, work: Path) -> list[dict[str, np.ndarray]]:
    """Per held-out phantom: the truth, ``medres segment``'s labels and both MONAI variants', on the input grid."""
    card, cases = model.card, load_volume_dataset(make_ct_phantoms(work / "held_out", 4, seed=23, dicom_cases=0))
    monai = {name: run for name, run in inference_variants(model, card.input_size).items()
             if name in (MONAI_DEFAULTS, MONAI_SAME_MATHS)}
    results = []
    for case in cases.training:
        image = read_image(case.images[0])
        prepared = prepare_volume(image.array, image.affine, card)
        volume = torch.from_numpy(np.ascontiguousarray(prepared.array))
        labels = {"truth": read_image(case.label).array[0].astype(np.uint8),
                  MEDRES_DEFAULT: np.asarray(segment_image(model, image))}
        for name, run in monai.items():
            labels[name] = probabilities_to_labels(torch.softmax(run(volume), dim=0), prepared.affine,
                                                   image.affine, image.spatial_shape)
        results.append(labels)
    return results


def mean_dice(cases: list[dict[str, np.ndarray]], first: str, second: str, label: int) -> float:
    return float(np.mean([dice(case[first] == label, case[second] == label) for case in cases]))


def print_speed(args: argparse.Namespace, medians: dict[str, float]) -> None:
    precision = resolve_precision(CPU, "auto")
    size = "x".join(str(v) for v in args.size)
    print(f"Speed: model `resunet3d` (untrained, seed 0), 96x96x96 windows, volume {size} (synthetic CT phantom, "
          f"1.5 mm); {args.repeats} alternating runs each after one warm-up, medians; auto precision here = "
          f"{precision or 'fp32'}.\n")
    print("| variant | median s | speed-up vs MONAI defaults |")
    print("|---|---|---|")
    for name in medians:
        print(f"| {name} | {medians[name]:.2f} | {medians[MONAI_DEFAULTS] / medians[name]:.2f}x |")
    print(f"\n**medres default vs MONAI defaults: {medians[MONAI_DEFAULTS] / medians[MEDRES_DEFAULT]:.2f}x faster** "
          f"(aim: at least 3x on CPU); vs MONAI doing the same arithmetic: "
          f"{medians[MONAI_SAME_MATHS] / medians[MEDRES_DEFAULT]:.2f}x\n")


def print_agreement(cases: list[dict[str, np.ndarray]], weights: str) -> None:
    print(f"Agreement on {len(cases)} held-out phantoms at their own grids ({weights}); Dice per organ, mean over "
          "cases:\n")
    print("| comparison | " + " | ".join(PHANTOM_LABELS[1:]) + " |")
    print("|---|" + "---|" * (len(PHANTOM_LABELS) - 1))
    rows = {
        "**medres segment vs MONAI defaults**": (MEDRES_DEFAULT, MONAI_DEFAULTS),
        "medres segment vs MONAI with the same overlap and blending": (MEDRES_DEFAULT, MONAI_SAME_MATHS),
        "medres segment vs ground truth": (MEDRES_DEFAULT, "truth"),
        "MONAI defaults vs ground truth": (MONAI_DEFAULTS, "truth"),
    }
    for title, (first, second) in rows.items():
        values = [mean_dice(cases, first, second, label) for label in range(1, len(PHANTOM_LABELS))]
        print(f"| {title} | " + " | ".join(f"{value:.4f}" for value in values) + " |")
    print("\n(aim: Dice >= 0.99 between medres and MONAI; the first row differs by the blending, Gaussian vs "
          "constant, which moves boundary voxels where the model is unsure, the second only by medres's speed-ups)\n")


def write_phantom_nifti(path: Path, size: tuple[int, int, int]) -> Path:
    """A gzipped int16 NIfTI of the phantom CT (Hounsfield units) at 1.5 mm, RAS+, centred on the phantom."""
    import nibabel as nib

    hounsfield, affine = phantom_ct(size)
    nib.save(nib.Nifti1Image(np.round(hounsfield).astype(np.int16), affine), path)
    return path


def whole_process_report(work: Path, model: torch.nn.Module, repeats: int,
                         sizes: tuple[tuple[int, int, int], ...]) -> list[tuple[str, list[ProcessVariant]]]:
    """``medres segment`` and the plain MONAI script, each as its own process, on each volume size."""
    checkpoint = save_checkpoint(model, work / "resunet3d.safetensors")
    results = []
    for size in sizes:
        name = "x".join(map(str, size))
        volume = write_phantom_nifti(work / f"ct_{name}.nii.gz", size)
        out = work / f"segment_{name}"
        arguments = ("segment", str(volume), "--checkpoint", str(checkpoint), "--no-progress")
        variants = [
            ProcessVariant("`medres segment`", medres_command(*arguments, "--out", str(out)), out=out,
                           timings_json=out / "volumes.json"),
            ProcessVariant("`medres segment --overlap 0.25`", medres_command(
                *arguments, "--out", str(work / f"segment_{name}_overlap_025"), "--overlap", "0.25"),
                out=work / f"segment_{name}_overlap_025"),
            ProcessVariant("plain script", [sys.executable, str(HERE / "plain_segment.py"), str(volume),
                                            str(checkpoint), str(work / f"plain_{name}.nii.gz")],
                           out=work / f"plain_{name}.nii.gz"),
        ]
        results.append((name, compare_processes(variants, repeats)))
    return results


def print_whole_process(results: list[tuple[str, list[ProcessVariant]]], repeats: int) -> None:
    print("### Whole process, as the user waits for it\n")
    print("`medres segment VOLUME --checkpoint CKPT --out OUT --no-progress` (its defaults: 4 windows per batch, "
          "overlap 0.5, Gaussian blending, auto precision) against `python benchmarks/plain_segment.py VOLUME CKPT "
          "OUT.nii.gz` (nibabel, z-score, `sliding_window_inference` with MONAI's defaults, argmax, save), each as "
          "its own process from the interpreter's start to its exit; gzipped int16 phantom CTs at 1.5 mm, untrained "
          f"`resunet3d` ({len(PHANTOM_LABELS)} labels); {repeats} alternating repeats after one warm-up run of each, "
          "medians (each run listed).\n")
    print_table(results, "volume")
    print("\n`--overlap 0.25` (MONAI's default overlap: 48 windows instead of 75 on the larger volume) shows what the "
          "window count costs; medres keeps 0.5 (see the overlap measurements below).\n")
    print("Where `medres segment`'s time went (`volumes.json` timings, medians over its runs above; the read runs in "
          "a thread beside the model's loading; inference includes preparing the volume and taking the labels: "
          "the argmax of the logits here, where the model's grid is the input's):\n")
    for name, (medres, *_) in results:
        print(f"- {name}: {breakdown_text(medres.timings)}")
    largest, (medres, quarter_overlap, plain) = results[-1]
    print(f"\n**Whole process, {largest}: `medres segment` "
          f"{statistics.median(ratios(plain.seconds, medres.seconds)):.2f}x the plain script's speed** (aim: at least "
          f"3x); with `--overlap 0.25` {statistics.median(ratios(plain.seconds, quarter_overlap.seconds)):.2f}x\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, nargs=3, default=(192, 192, 96))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=80, help="training epochs of the agreement model")
    parser.add_argument("--checkpoint", help="a trained phantom seg checkpoint for the agreement (skips training)")
    parser.add_argument("--quick", action="store_true", help="a smaller volume, 2 repeats, a shorter training")
    parser.add_argument("--whole-process-only", action="store_true", help="only the whole-process comparison")
    parser.add_argument("--whole-process-repeats", type=int, default=3, help="alternating repeats (default: 3)")
    args = parser.parse_args()
    whole_sizes = WHOLE_PROCESS_SIZES
    if args.quick:
        args.size, args.repeats, args.epochs, args.whole_process_repeats = (144, 144, 96), 2, 20, 2
        whole_sizes = ((96, 96, 96), (192, 192, 128))
    torch.manual_seed(0)
    model = create_model("resunet3d", labels=PHANTOM_LABELS).eval()
    print("## Sliding-window segmentation (bench_segment.py)\n")
    if not args.whole_process_only:
        inner_loop_and_agreement(args, model)
    with tempfile.TemporaryDirectory(prefix="medres-bench-segment-whole-") as work:
        print_whole_process(whole_process_report(Path(work), model, args.whole_process_repeats, whole_sizes),
                            args.whole_process_repeats)


def inner_loop_and_agreement(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """The sliding window alone against MONAI's, then the agreement of a trained model's outputs."""
    volume = phantom_volume(tuple(args.size))
    variants = {name: functools.partial(run, volume)
                for name, run in inference_variants(model, model.card.input_size).items()}
    with torch.no_grad():
        medians, _ = time_alternating(variants, args.repeats, CPU)
    print_speed(args, medians)
    with tempfile.TemporaryDirectory(prefix="medres-bench-segment-") as work:
        checkpoint = args.checkpoint or train_phantom_model(Path(work), args.epochs)
        weights = (f"weights from `{args.checkpoint}`" if args.checkpoint else
                   f"`resunet3d_tiny` trained here ({default_seg_loop().lr_schedule} schedule) for {args.epochs} "
                   f"epochs of {PATCHES_PER_EPOCH} patches of "
                   f"{'x'.join(AGREEMENT_PATCH)} at {AGREEMENT_SPACING_MM} mm on {TRAINING_PHANTOMS} phantoms")
        print_agreement(held_out_labels(load_checkpoint(checkpoint).eval(), Path(work)), weights)


if __name__ == "__main__":
    main()
