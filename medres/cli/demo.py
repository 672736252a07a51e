"""``medres demo``: the product tour, every journey on synthetic data, in minutes.

Each step runs the ``medres`` command a user would type, in its own process
(this interpreter's ``python -m medres ...``), and prints it first, so the tour
doubles as a list of copy-paste commands and goes through exactly what a shell
goes through: argument parsing, the input checks, exit codes. The tour never
imports :mod:`medres.cli.main` (which imports this module). All data is
synthetic (:mod:`medres.synthetic`), plus, for scoring, a few public DICOM test
files shipped by pydicom and pydicom-data.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"
PUBLIC_DICOM_SAMPLES = ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm",
                        "JPEG2000.dcm", "rtplan.dcm")
STEP_SUCCESS_CODES = (0, 3)  # 3: scoring finished with some files refused, as the sample export intends


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the product tour on synthetic data (minutes; every journey)",
        description="Generate a synthetic ChestX-ray14 folder, prepare the cache, train and evaluate chexnet_tiny, "
        "batch-score a sample DICOM export, train resunet3d_tiny on CT phantoms and segment a DICOM series, then "
        "print where every report is and how to open the review app. All demo data is synthetic.")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smaller, faster tour (for tests)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the tour and print its summary; a failed step ends it with that command's exit code."""
    print("medres demo: every journey on SYNTHETIC data; nothing here comes from a patient.")
    settings = TourSettings(out=args.out, progress=args.progress)
    if args.quick:
        settings = TourSettings(out=args.out, n_images=300, image_size=64, cxr_epochs=2, n_phantoms=6, seg_epochs=2,
                                progress=args.progress)
    try:
        result = run_tour(settings)
    except StepFailedError as failure:
        print(f"medres demo: stopped: `medres {shlex.join(failure.arguments)}` exited with {failure.code} "
              "(its reason is printed above)", file=sys.stderr)
        return failure.code
    print("\n".join(summary_lines(result, settings)))
    return 0


@dataclass
class TourSettings:
    """How big the tour is; the defaults take a few minutes on two CPU cores (see the closing timings)."""

    out: Path
    n_images: int = 1500
    image_size: int = 128
    cxr_epochs: int = 6
    n_phantoms: int = 12
    seg_epochs: int = 12
    echo: Callable[[str], None] = print
    progress: bool = True


@dataclass
class TourResult:
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class StepFailedError(Exception):
    """A step's ``medres`` command exited with a failure code; the command has printed its own reason.

    Not a ``MedresError``: it never leaves :func:`run`, which turns it into that
    command's exit code.
    """

    def __init__(self, arguments: list[str], code: int):
        super().__init__(f"`medres {shlex.join(arguments)}` exited with {code}")
        self.arguments = arguments
        self.code = code


def run_command(arguments: list[str], settings: TourSettings) -> None:
    """Print one ``medres`` command, then run it in its own process; a failure stops the tour.

    The command writes straight to this process's terminal, progress bars
    included, so what the user sees is what typing it would show.

    Raises:
        StepFailedError: The command exited with a code other than 0 or 3.
    """
    if not settings.progress:
        arguments = [*arguments, "--no-progress"]
    settings.echo(f"\n$ {medres_executable()} {shlex.join(arguments)}")
    sys.stdout.flush()  # the echoed line first, also when stdout is a pipe or a file
    sys.stderr.flush()
    code = subprocess.run([sys.executable, "-m", "medres", *arguments], check=False).returncode
    if code not in STEP_SUCCESS_CODES:
        raise StepFailedError(arguments, code)


def run_tour(settings: TourSettings) -> TourResult:
    """Run every step; returns where each report went and how long each step took."""
    result = TourResult()
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    steps = (("reading the bundled samples", samples_step), ("chest X-ray classifier", chest_xray_journey),
             ("batch scoring", scoring_journey), ("3D segmentation", segmentation_journey))
    for name, step in steps:
        started = time.perf_counter()
        settings.echo(f"\n=== {name} ===")
        result.outputs.update(step(settings))
        result.seconds[name] = time.perf_counter() - started
    return result


def samples_step(settings: TourSettings) -> dict[str, Path]:
    """What the reader makes of each bundled sample (MONOCHROME1 CR, oblique CT series, NIfTI, PNG)."""
    from medres.errors import MedresError
    from medres.io import read_image

    if not SAMPLE_DATA.is_dir():
        settings.echo("(no sample_data folder next to the package; skipped)")
        return {}
    for path in sorted(p for p in SAMPLE_DATA.iterdir() if p.is_dir() or p.suffix in (".dcm", ".png", ".gz")):
        try:
            image = read_image(path)
        except MedresError as error:
            settings.echo(f"  {path.name:<26} refused: {error.one_line()}")
            continue
        kind = "volume (RAS+)" if image.is_volume else "2D"
        spacing = " x ".join(f"{value:.2f}" for value in image.spacing)
        settings.echo(f"  {path.name:<26} {image.modality:<4} {kind} {tuple(image.array.shape)} spacing {spacing} mm")
    return {"samples": SAMPLE_DATA}


def chest_xray_journey(settings: TourSettings) -> dict[str, Path]:
    """Synthetic ChestX-ray14, then ``prepare cxr``, ``train cxr`` and ``eval cxr`` on it."""
    from medres.data import SYNTHETIC_README
    from medres.synthetic.chestxray14 import make_chestxray14

    data = settings.out / "chestxray14"
    cache = settings.out / "cache" / f"cxr_{settings.image_size}"
    run = settings.out / "runs" / "cxr"
    report = settings.out / "reports" / "cxr"
    if not (data / SYNTHETIC_README).exists():
        settings.echo(f"writing {settings.n_images} SYNTHETIC chest X-rays in the NIH ChestX-ray14 layout to {data}")
        make_chestxray14(data, settings.n_images, seed=0, image_size=settings.image_size)
    run_command(["prepare", "cxr", "--data", str(data), "--size", str(settings.image_size), "--out", str(cache)],
                settings)
    shutil.rmtree(run, ignore_errors=True)
    run_command(["train", "cxr", "--data", str(data), "--cache", str(cache), "--out", str(run), "--model",
                 "chexnet_tiny", "--epochs", str(settings.cxr_epochs), "--batch-size", "16", "--lr", "2e-3"], settings)
    run_command(["eval", "cxr", "--checkpoint", str(run / "best.safetensors"), "--data", str(data), "--cache",
                 str(cache), "--split", "test", "--out", str(report)], settings)
    return {"cxr_data": data, "cxr_checkpoint": report / "calibrated.safetensors", "cxr_report": report / "report.md"}


def scoring_journey(settings: TourSettings) -> dict[str, Path]:
    """``score`` on a small sample export, with the thresholds ``eval cxr`` chose on validation."""
    export = build_sample_export(settings.out / "pacs_export", settings.out / "chestxray14")
    scores = settings.out / "scores"
    calibrated = settings.out / "reports" / "cxr" / "calibrated.safetensors"
    run_command(["score", str(export), "--checkpoint", str(calibrated),
                 "--out", str(scores), "--heatmaps"], settings)
    return {"pacs_export": export, "scores": scores / "scores.csv", "score_errors": scores / "errors.csv"}


def build_sample_export(export: Path, cxr_data: Path, n_synthetic: int = 24) -> Path:
    """A small 'PACS export': synthetic CR/DX chest films (both polarities, a lateral), public DICOM files, junk."""
    from medres.data.chestxray14 import load_chestxray14
    from medres.synthetic.dicom import SYNTHETIC_IDENTIFIERS, radiograph_from_png

    table = load_chestxray14(cxr_data).table
    test_rows = table[table["split"] == "test"].head(n_synthetic)
    for number, row in enumerate(test_rows.itertuples()):
        photometric = "MONOCHROME1" if number % 3 == 0 else "MONOCHROME2"
        view = "LL" if number == n_synthetic - 1 else row.view
        target = export / f"study_{row.patient_id:05d}" / f"{Path(row.image).stem}.dcm"
        radiograph_from_png(Path(row.path), target, uid_seed=f"tour/{row.image}", modality="CR" if number % 2 else "DX",
                            photometric=photometric, view_position=view, identifiers=SYNTHETIC_IDENTIFIERS)
    _copy_public_samples(export / "public_test_files")
    (export / "notes.txt").write_text("not an image: medres records it and moves on\n")
    return export


def _copy_public_samples(folder: Path) -> None:
    try:
        import data_store
        import pydicom.data
    except ImportError:
        return
    roots = (Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data")
    folder.mkdir(parents=True, exist_ok=True)
    for name in PUBLIC_DICOM_SAMPLES:
        for root in roots:
            if (root / name).is_file():
                shutil.copy(root / name, folder / name)
                break


def segmentation_journey(settings: TourSettings) -> dict[str, Path]:
    """Synthetic CT phantoms, then ``train seg`` and ``segment`` of one DICOM series."""
    from medres.synthetic.phantoms import make_ct_phantoms

    phantoms = settings.out / "phantoms"
    run = settings.out / "runs" / "seg"
    segmentation = settings.out / "segmentation"
    if not (phantoms / "dataset.json").exists():
        settings.echo(f"writing {settings.n_phantoms} SYNTHETIC CT phantoms (MSD layout) to {phantoms}")
        make_ct_phantoms(phantoms, settings.n_phantoms, seed=0)
    shutil.rmtree(run, ignore_errors=True)
    run_command(["train", "seg", "--data", str(phantoms), "--out", str(run), "--model", "resunet3d_tiny",
                 "--patch", "48", "48", "32", "--patches-per-epoch", "60", "--lr", "2e-3", "--mirror-axes",
                 "--epochs", str(settings.seg_epochs)], settings)
    series = _first_dicom_series(phantoms)
    run_command(["segment", str(series), "--checkpoint", str(run / "best.safetensors"), "--out",
                 str(segmentation), "--dicom-seg"], settings)
    return {"seg_checkpoint": run / "best.safetensors", "segmentation": segmentation}


def _first_dicom_series(root: Path) -> Path:
    for folder in sorted(path for path in root.rglob("*") if path.is_dir()):
        if any(child.suffix == ".dcm" for child in folder.iterdir()):
            return folder
    raise FileNotFoundError(f"no DICOM series under {root}")


def summary_lines(result: TourResult, settings: TourSettings) -> list[str]:
    """Where everything is, how long each step took, and the command that opens the review app on it."""
    lines = ["", "=== done: all data above is SYNTHETIC (plus public DICOM test files) ==="]
    for name, path in result.outputs.items():
        lines.append(f"  {name:<16} {path}")
    for name, seconds in result.seconds.items():
        lines.append(f"  {name:<28} {seconds:6.0f} s")
    lines += ["", "Open the review app on these results (in this folder, from any shell):",
              f"  {app_command(result, settings)}"]
    activate = Path(sys.executable).parent / "activate"
    if medres_executable() != "medres" and activate.is_file():
        lines.append(f"  (or run `source {_shell_path(activate)}` once, then type `medres ...` as in the README)")
    return lines


def app_command(result: TourResult, settings: TourSettings) -> str:
    """The command line that opens the review app on the tour's outputs, runnable in a new shell."""
    arguments = ["app", "--root", str(settings.out), "--checkpoint", str(result.outputs["cxr_checkpoint"])]
    if "seg_checkpoint" in result.outputs:
        arguments += ["--seg-checkpoint", str(result.outputs["seg_checkpoint"])]
    return f"{medres_executable()} {shlex.join(arguments)}"


def medres_executable() -> str:
    """How a new shell reaches this medres: the ``medres`` script beside this interpreter.

    A shell that has not activated the virtual environment has no ``medres`` on
    its PATH, so the script is named by its path (relative to the working
    folder when it lies under it, as ``.venv/bin/medres`` after ``make demo``).
    Plain ``medres`` only when that is what the PATH finds.
    """
    script = Path(sys.executable).parent / "medres"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m medres"
    on_path = shutil.which("medres")
    if on_path and Path(on_path).absolute() == script.absolute() and "VIRTUAL_ENV" not in os.environ:
        return "medres"
    return _shell_path(script)


def _shell_path(path: Path) -> str:
    """``path`` for a shell started in the working folder: relative when under it, quoted."""
    try:
        return shlex.quote(str(path.absolute().relative_to(Path.cwd().absolute())))
    except ValueError:
        return shlex.quote(str(path.absolute()))
