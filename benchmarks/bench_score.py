"""`medres score` end to end versus the model alone and a naive per-file loop, side by side.

    python benchmarks/bench_score.py [--quick]

A folder of synthetic uncompressed chest X-ray DICOMs (1024 x 1024, 16-bit)
is scored with an untrained ``chexnet_densenet121`` (the speed does not
depend on the weights). In one run this prints:

- end-to-end images/s over model-only images/s (same precision, same batch),
  the two measured alternately and repeated (the machine is shared and noisy),
  with the default schedule (decoding and the model in turns on a CPU) and
  with decoding overlapping the model;
- end-to-end over a naive loop (``dcmread`` -> numpy -> resize -> model at
  batch 1 in fp32, one file at a time);
- the achieved fraction of the bf16 ceiling: images/s x GFLOP per image over
  a measured bf16 matmul rate;
- peak RSS of the whole process tree (main process + decoder workers) for
  10x the files over 1x the files: memory must not grow with the folder;
- JPEG 2000: what decoding costs per file, what ``--reduced-j2k`` gains, and
  how much it changes the scores;
- whole processes, as the user waits for them: the ``medres score`` command
  against ``plain_score.py`` (the naive loop as its own process), alternating,
  on 300 uncompressed 1000 x 1000 CR/DX DICOMs and on 16 (where start-up
  dominates), with the timing breakdown ``run.json`` records
  (``--whole-process-only`` runs just this part).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image as PILImage
from plain_score import score_file as plain_score_file  # the plain script beside this one
from pydicom.uid import JPEG2000Lossless
from torch.utils.flop_counter import FlopCounterMode
from whole_process import (
    ENTRY_POINTS_NOTE,
    ProcessVariant,
    breakdown_text,
    compare_processes,
    medres_command,
    print_table,
    ratios,
)

from medres.io import read_image
from medres.models import create_model, load_checkpoint, save_checkpoint
from medres.runtime import autocast_context, resolve_precision
from medres.score import ScoreConfig, score_folder
from medres.score.reduced import decode_reduced_if_j2k
from medres.synthetic.chestxray14 import make_chestxray14
from medres.synthetic.dicom import projection_dataset, write_dicom
from medres.transforms.cxr import preprocess_for_model

MODEL = "chexnet_densenet121"
BATCH = 16
SIDE = 1024
WHOLE_PROCESS_SIDE = 1000  # the 1000-pixel CRs
HERE = Path(__file__).resolve().parent


def write_folder(folder: Path, n_files: int, work: Path, side: int = SIDE) -> list[Path]:
    """``n_files`` ``side`` x ``side`` 16-bit radiographs: synthetic CXR14 films upsampled, with per-file noise."""
    cxr14 = work / "cxr14"
    if not (cxr14 / "images").is_dir():
        make_chestxray14(cxr14, 16, seed=0, image_size=256)
    bases = sorted((cxr14 / "images").glob("*.png"))
    rng = np.random.default_rng(0)
    paths = []
    for index in range(n_files):
        film = PILImage.open(bases[index % len(bases)]).convert("F").resize((side, side), PILImage.BICUBIC)
        values = np.asarray(film) * 16 + rng.normal(0, 20, (side, side))
        pixels = np.clip(values, 0, 4095).astype(np.uint16)
        monochrome1 = index % 2 == 1
        dataset = projection_dataset(4095 - pixels if monochrome1 else pixels, uid_seed=f"bench-{index}",
                                     modality="DX" if monochrome1 else "CR",
                                     photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2")
        paths.append(write_dicom(dataset, folder / f"film{index:05d}.dcm"))
    return paths


def linked_folder(folder: Path, sources: list[Path], n_files: int) -> Path:
    """``n_files`` hard links cycling over ``sources`` (many files without the disk space)."""
    folder.mkdir(parents=True)
    for index in range(n_files):
        os.link(sources[index % len(sources)], folder / f"link{index:05d}.dcm")
    return folder


def model_only_rate(model: torch.nn.Module, n_images: int, precision: str) -> float:
    inputs = torch.randn(BATCH, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    batches = max(1, n_images // BATCH)
    with torch.inference_mode(), autocast_context(torch.device("cpu"), precision):
        model(inputs)
        start = time.perf_counter()
        for _ in range(batches):
            model(inputs)
    return batches * BATCH / (time.perf_counter() - start)


def end_to_end_rate(folder: Path, checkpoint: Path, out: Path, **options) -> tuple[float, Path]:
    shutil.rmtree(out, ignore_errors=True)
    options = {"precision": "auto", **options}  # this section measures the bf16 path against the model alone
    summary = score_folder(ScoreConfig(str(folder), str(checkpoint), str(out), batch_size=BATCH, progress=False,
                                       **options))
    return summary.run["images_per_second"], out


def naive_rate(paths: list[Path], model: torch.nn.Module) -> float:
    """One file at a time: dcmread -> pixel_array -> min-max -> resize -> model (batch 1, fp32)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for path in paths:
            plain_score_file(path, model)
    return len(paths) / (time.perf_counter() - start)


def bf16_matmul_rate(side: int = 2048, repeats: int = 6) -> float:
    """GFLOP/s of bf16 matrix products on all cores (the ceiling for convolutions)."""
    left, right = torch.randn(side, side, dtype=torch.bfloat16), torch.randn(side, side, dtype=torch.bfloat16)
    left @ right
    start = time.perf_counter()
    for _ in range(repeats):
        left @ right
    return 2 * side**3 * repeats / (time.perf_counter() - start) / 1e9


def gflop_per_image(model: torch.nn.Module) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, 224, 224))
    return counter.get_total_flops() / 1e9


def peak_tree_rss(command: list[str]) -> tuple[float, int]:
    """Run ``command``; the peak summed RSS (MiB) of it and all its descendants, and its exit code."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(0.02)
    return peak / 1024, process.returncode


def _tree_rss_kib(root: int) -> int:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(_rss_kib(pid) for pid in tree)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def j2k_folder(sources: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for source in sources:
        dataset = pydicom.dcmread(source)
        dataset.compress(JPEG2000Lossless)
        paths.append(write_dicom(dataset, folder / source.name))
    return paths


def per_file_ms(variants: dict[str, list[Path]], card) -> dict[str, float]:
    """Median ms to read, decode and preprocess one file on one thread, as a worker does.

    Args:
        variants: Name -> files; names ending in ``_reduced`` use reduced-resolution
            JPEG 2000 decoding. Files of all variants are timed in turn, file by file.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(max(len(paths) for paths in variants.values())):
        for name, paths in variants.items():
            path = paths[index % len(paths)]
            start = time.perf_counter()
            image = None
            if name.endswith("_reduced"):
                image = decode_reduced_if_j2k(pydicom.dcmread(path, stop_before_pixels=True), path, card, 2**31)
            preprocess_for_model((image or read_image(path)).array, card)
            times[name].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    return {f"ms_{name}": statistics.median(values) * 1e3 for name, values in times.items()}


def read_probabilities(out: Path) -> dict[str, np.ndarray]:
    with open(out / "scores.csv", newline="") as stream:
        return {row["path"]: np.array([float(v) for k, v in row.items() if k.startswith("prob_")])
                for row in csv.DictReader(stream)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (a few minutes on 2 shared cores)")
    parser.add_argument("--whole-process-only", action="store_true", help="only the whole-process comparison")
    parser.add_argument("--whole-process-files", type=int, nargs="+", help="folder sizes (default: 16 300)")
    parser.add_argument("--whole-process-repeats", type=int, help="alternating repeats (default: 3)")
    args = parser.parse_args()
    sizes = dict(files=48, naive=4, memory=(10, 100), j2k=16, repeats=2, whole_files=(16, 96), whole_repeats=2) \
        if args.quick else dict(files=200, naive=8, memory=(100, 1000), j2k=32, repeats=4, whole_files=(16, 300),
                                whole_repeats=3)
    sizes["whole_files"] = tuple(args.whole_process_files or sizes["whole_files"])
    sizes["whole_repeats"] = args.whole_process_repeats or sizes["whole_repeats"]
    with tempfile.TemporaryDirectory(prefix="bench_score_") as temporary:
        work = Path(temporary)
        torch.manual_seed(0)
        checkpoint = save_checkpoint(create_model(MODEL), work / "model.safetensors")
        report = None if args.whole_process_only else run_benchmark(work, checkpoint, sizes)
        whole = whole_process_report(work, checkpoint, sizes)
    print("## Batch scoring a DICOM folder (bench_score.py)\n")
    if report is not None:
        print_report(report, sizes)
    print_whole_process(whole, sizes)


def whole_process_report(work: Path, checkpoint: Path, sizes: dict) -> list[tuple[int, list[ProcessVariant]]]:
    """``medres score`` and the plain script, each as its own process, on each folder size."""
    results = []
    for n_files in sizes["whole_files"]:
        folder = work / f"whole{n_files}"
        write_folder(folder, n_files, work, side=WHOLE_PROCESS_SIDE)
        out = work / f"whole{n_files}_out"
        arguments = ("score", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress")
        variants = [
            ProcessVariant("`medres score` (fp32, the default)", medres_command(*arguments), out=out,
                           timings_json=out / "run.json"),
            ProcessVariant("`medres score --precision bf16`", medres_command(*arguments, "--precision", "bf16"),
                           out=out, timings_json=out / "run.json"),
            ProcessVariant("plain script", [sys.executable, str(HERE / "plain_score.py"), str(folder), str(checkpoint),
                                            str(work / f"plain{n_files}.csv")], out=work / f"plain{n_files}.csv"),
        ]
        results.append((n_files, compare_processes(variants, sizes["whole_repeats"])))
    return results


def print_whole_process(results: list[tuple[int, list[ProcessVariant]]], sizes: dict) -> None:
    print("### Whole process, as the user waits for it\n")
    print(f"`medres score FOLDER --checkpoint CKPT --out OUT --no-progress` against `python "
          f"benchmarks/plain_score.py FOLDER CKPT OUT.csv` (the naive loop: dcmread, min-max, resize, batch 1, fp32, "
          f"one CSV row per file), each as its own process from the interpreter's start to its exit; folders of "
          f"uncompressed {WHOLE_PROCESS_SIDE} x {WHOLE_PROCESS_SIDE} CR/DX DICOMs, untrained `{MODEL}`; "
          f"{sizes['whole_repeats']} alternating repeats after one warm-up run of each, medians (each run listed).\n")
    print_table([(str(n_files), variants) for n_files, variants in results], "files")
    print(f"\n{ENTRY_POINTS_NOTE} Timed here: the `medres` console script.\n")
    print("Where `medres score`'s time went (`run.json` timings, medians over its runs above; decode in workers is "
          "summed over the decoder processes and overlaps the rest):\n")
    for n_files, (default, bf16, _) in results:
        print(f"- {n_files} files, fp32: {breakdown_text(default.timings)}")
        print(f"- {n_files} files, bf16: {breakdown_text(bf16.timings)}")
    largest, (default, bf16, plain) = results[-1][0], results[-1][1]
    default_ratio = statistics.median(ratios(plain.seconds, default.seconds))
    bf16_ratio = statistics.median(ratios(plain.seconds, bf16.seconds))
    print(f"\n**Whole process, {largest} files: `medres score` {default_ratio:.2f}x the plain script's speed, with "
          f"`--precision bf16` {bf16_ratio:.2f}x** "
          f"(aim: at least 3x with probabilities within 0.005 of fp32, which bf16 does not keep)\n")


def run_benchmark(work: Path, checkpoint: Path, sizes: dict) -> dict:
    model = load_checkpoint(checkpoint).to(memory_format=torch.channels_last)
    paths = write_folder(work / "films", sizes["files"], work)
    precision = str(resolve_precision(torch.device("cpu"), "auto") or "fp32").removeprefix("torch.")
    report: dict = {"precision": precision, "model_only": [], "end_to_end": [], "overlap": [], "naive": [],
                    "matmul": []}
    naive_model = load_checkpoint(checkpoint)
    for _ in range(sizes["repeats"]):  # alternate, so machine noise hits every variant alike
        report["model_only"].append(model_only_rate(model, min(sizes["files"], 96), "auto"))
        report["end_to_end"].append(end_to_end_rate(work / "films", checkpoint, work / "out")[0])
        report["overlap"].append(end_to_end_rate(work / "films", checkpoint, work / "out", schedule="overlap")[0])
        report["naive"].append(naive_rate(paths[: sizes["naive"]], naive_model))
        report["matmul"].append(bf16_matmul_rate())
    report["gflop"] = gflop_per_image(model)
    small, large = sizes["memory"]
    for n_files in (small, large):
        command = [sys.executable, "-m", "medres", "score", str(linked_folder(work / f"m{n_files}", paths, n_files)),
                   "--checkpoint", str(checkpoint), "--out", str(work / f"mout{n_files}"), "--no-progress"]
        report[f"rss_{n_files}"] = peak_tree_rss(command)[0]
    report.update(jpeg2000_report(work, paths[: sizes["j2k"]], checkpoint, model.card))
    return report


def jpeg2000_report(work: Path, sources: list[Path], checkpoint: Path, card) -> dict:
    compressed = j2k_folder(sources, work / "j2k")
    real = Path(__import__("data_store").__file__).parent / "data" / "RG1_J2KR.dcm"
    result = per_file_ms({"uncompressed": sources, "j2k": compressed, "j2k_reduced": compressed}, card)
    result.update(per_file_ms({"real": [real] * 3, "real_reduced": [real] * 3}, card))
    full_rate, full_out = end_to_end_rate(work / "j2k", checkpoint, work / "j2k_full")
    reduced_rate, reduced_out = end_to_end_rate(work / "j2k", checkpoint, work / "j2k_reduced", reduced_j2k=True)
    full, reduced = read_probabilities(full_out), read_probabilities(reduced_out)
    differences = np.concatenate([np.abs(full[path] - reduced[path]) for path in full])
    result.update(rate_j2k=full_rate, rate_j2k_reduced=reduced_rate, max_diff=float(differences.max()),
                  mean_diff=float(differences.mean()))
    return result


def print_report(report: dict, sizes: dict) -> None:
    end_to_end, model_only = statistics.median(report["end_to_end"]), statistics.median(report["model_only"])
    naive, matmul = statistics.median(report["naive"]), statistics.median(report["matmul"])
    # Ratios within each repeat, then their median: load from other users drifts between repeats.
    over_model = _ratios(report["end_to_end"], report["model_only"])
    over_overlap = _ratios(report["overlap"], report["model_only"])
    over_naive = _ratios(report["end_to_end"], report["naive"])
    ceiling = _ratios([rate * report["gflop"] for rate in report["end_to_end"]], report["matmul"])
    small, large = sizes["memory"]
    print(f"{sizes['files']} synthetic uncompressed chest X-ray DICOMs ({SIDE} x {SIDE}, 16-bit, CR/DX, "
          f"MONOCHROME1/2), untrained `{MODEL}`, batch {BATCH}, precision {report['precision']}, "
          f"default workers; {sizes['repeats']} alternating repeats, medians.\n")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| model only, images/s | {model_only:.1f} ({', '.join(f'{v:.1f}' for v in report['model_only'])}) |")
    print(f"| `medres score` end to end (default: `--schedule alternate` on CPU), images/s | {end_to_end:.1f} "
          f"({', '.join(f'{v:.1f}' for v in report['end_to_end'])}) |")
    print(f"| the same with `--schedule overlap` (decoding alongside the model), images/s | "
          f"{statistics.median(report['overlap']):.1f} ({', '.join(f'{v:.1f}' for v in report['overlap'])}) |")
    print(f"| naive loop (dcmread, resize, batch 1, fp32), images/s | {naive:.1f} "
          f"({', '.join(f'{v:.1f}' for v in report['naive'])}) |")
    print(f"| GFLOP per image / bf16 matmul GFLOP/s | {report['gflop']:.2f} / {matmul:.0f} |")
    print(f"| peak RSS of the process tree, {small} / {large} files (MiB) | "
          f"{report[f'rss_{small}']:.0f} / {report[f'rss_{large}']:.0f} |")
    print(f"| JPEG 2000 lossless: read + decode + preprocess per file, ms (uncompressed: "
          f"{report['ms_uncompressed']:.0f}) | {report['ms_j2k']:.0f}; reduced resolution: "
          f"{report['ms_j2k_reduced']:.0f} |")
    print(f"| pydicom-data `RG1_J2KR.dcm` (1955 x 1841 CR): per file, ms | {report['ms_real']:.0f}; reduced: "
          f"{report['ms_real_reduced']:.0f} |")
    print(f"| JPEG 2000 folder end to end, images/s | {report['rate_j2k']:.1f}; reduced: "
          f"{report['rate_j2k_reduced']:.1f} |")
    print(f"| score change from reduced decoding, max / mean abs probability | {report['max_diff']:.4f} / "
          f"{report['mean_diff']:.4f} |")
    print("\nRatios are taken within each repeat (listed), the figure is their median.\n")
    print(f"**End to end / model only: {statistics.median(over_model):.2f}** ({_listed(over_model)}; with "
          f"`--schedule overlap`: {statistics.median(over_overlap):.2f}) (aim: at least 0.85)  ")
    print(f"**End to end / naive loop: {statistics.median(over_naive):.1f}x** ({_listed(over_naive)}) "
          "(aim: at least 3x)  ")
    print(f"**Fraction of the bf16 ceiling: {statistics.median(ceiling):.2f}** ({_listed(ceiling)})  ")
    print(f"**Peak memory, {large} files / {small} files: {report[f'rss_{large}'] / report[f'rss_{small}']:.2f}** "
          "(aim: at most 1.1)  ")
    print(f"**JPEG 2000 reduced-resolution decoding: {report['ms_j2k'] / report['ms_j2k_reduced']:.1f}x cheaper "
          f"per file**; scores of an untrained model move by at most {report['max_diff']:.4f}\n")


def _ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [top / bottom for top, bottom in zip(numerators, denominators)]


def _listed(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    main()
