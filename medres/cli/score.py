"""``medres score``: score every chest radiograph in a folder tree into a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from medres.io.budget import DEFAULT_SIZE_BUDGET

EPILOG = """\
outputs in OUT_DIR:
  scores.csv      one row per scored image: pseudonyms, relative path, modality, view,
                  prob_<Label> and call_<Label> (at the checkpoint's thresholds), model, checkpoint SHA-256
  errors.csv      one row per file not scored: path, outcome (skipped/failed), reason code, message
  run.json        counts per outcome and reason, timings (start-up moments from the process start,
                  decode, inference, writing; --verbose prints them), images/s, versions, arguments
  journal-rank*.jsonl  resumable journal: rerun the same command to finish a killed run; a file is
                  redone when its relative path, size or mtime, the checkpoint or the output settings change
  .pseudonym_key  the key of the pseudonyms (mode 0600) unless --pseudonym-key is given

exit codes (the table every medres command follows; see medres --help):
  0  every file was scored or skipped (skipped: not a frontal chest radiograph, not an image, ...)
  2  the run could not start: bad options, missing or empty input folder, refused checkpoint
     (not_safetensors; unsafe_checkpoint: pickles are never loaded)
  3  the run completed but some files failed (see errors.csv)
  1  internal error, or the outputs could not be written (disk full, permissions)
  130  interrupted: rerun the same command to resume

Multi-process / multi-GPU: torchrun --nproc_per_node N -m medres score INPUT_DIR ... (files are
sharded by rank, rank 0 writes the tables; torchrun reports a rank's exit code 3 as a failure of its own).
No patient name, ID, birth date, accession number or institution is written unless
--keep-identifiers is given. Research use only, not for diagnosis.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score", help="score a folder of DICOM/PNG/JPEG chest X-rays into a table",
        description="Walk INPUT_DIR recursively, recognise DICOM (by content), PNG and JPEG, score every "
        "frontal chest radiograph with the checkpoint, and write scores and errors tables. Resumable: "
        "rerunning the same command skips files already done.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_dir", metavar="INPUT_DIR", type=Path, help="folder to score (recursively)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="model checkpoint (.safetensors)")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR", help="output folder")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model batch (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="decoder processes (default: every core when alternating, "
                        "half of them when overlapping)")
    parser.add_argument("--schedule", choices=("auto", "alternate", "overlap"), default="auto",
                        help="decode and run the model in turns (CPU) or at the same time (GPU); "
                        "auto picks (default: %(default)s)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="fp32",
                        help="fp32 gives the probabilities `eval cxr` calibrated on and the app shows (default: "
                        "%(default)s); bf16 (auto: bf16 where the CPU has it, AMP on CUDA) is about twice as fast "
                        "on a CPU but moves probabilities by up to about 0.03 (see benchmarks/RESULTS.md)")
    parser.add_argument("--format", dest="table_format", choices=("csv", "parquet"), default="csv",
                        help="table format (default: %(default)s)")
    parser.add_argument("--pseudonym-key", help="secret key for the pseudonyms (default: a random key kept in "
                        "OUT_DIR/.pseudonym_key); use the same key to link runs")
    parser.add_argument("--keep-identifiers", action="store_true",
                        help="add patient_id and accession_number columns (identifying!)")
    parser.add_argument("--heatmaps", action="store_true",
                        help="write Grad-CAM PNGs for positive calls to OUT_DIR/heatmaps/")
    parser.add_argument("--reduced-j2k", action="store_true",
                        help="decode JPEG 2000 at a reduced resolution (faster; scores change slightly)")
    parser.add_argument("--size-budget", type=int, default=DEFAULT_SIZE_BUDGET,
                        help="bytes of decoded pixels allowed per file (default: 2 GiB)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from medres.score import ScoreConfig, score_folder

    config = ScoreConfig(
        input_dir=str(args.input_dir), checkpoint=str(args.checkpoint), out_dir=str(args.out),
        batch_size=args.batch_size, workers=args.workers, schedule=args.schedule, precision=args.precision,
        table_format=args.table_format, pseudonym_key=args.pseudonym_key, keep_identifiers=args.keep_identifiers,
        heatmaps=args.heatmaps, reduced_j2k=args.reduced_j2k, size_budget=args.size_budget,
        progress=args.progress, verbose=args.verbose)
    summary = score_folder(config)  # errors become exit codes in medres.cli.main, as for every command
    if summary.run:
        counts = summary.counts
        print(f"scored {counts.get('scored', 0)}, skipped {counts.get('skipped', 0)}, failed "
              f"{counts.get('failed', 0)} of {counts.get('files_found', 0)} files; tables in {summary.out_dir}")
        if args.verbose:
            from medres.timing import describe

            print(describe(summary.run["timings"]))
    return summary.exit_code
