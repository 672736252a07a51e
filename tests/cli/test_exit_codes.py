"""One table of exit codes: every subcommand, given each kind of wrong input, exits 2 with one line and no traceback.

The subcommands are enumerated from the real parser (``medres.cli.main.build_parser``), so a new one fails
:func:`test_every_subcommand_has_wrong_input_cases` until its inputs are listed in :data:`COMMANDS` below.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from medres.cli import info as info_cli
from medres.cli.main import EXIT_CODES, build_parser, main, subcommands
from medres.models import create_model, save_checkpoint
from tests.conftest import SAMPLE_DATA

MEDRES_EXECUTABLE = Path(sys.executable).parent / "medres"
ORIGINAL_POPEN = subprocess.Popen

# The kinds of thing an input argument names, and the wrong inputs each kind is given, with the reason expected.
FOLDER, IMAGE, CXR_CHECKPOINT, SEG_CHECKPOINT, ANY_CHECKPOINT, FILE, WEIGHTS = (
    "folder", "image", "cxr_checkpoint", "seg_checkpoint", "any_checkpoint", "file", "weights")
CHECKPOINT_KINDS = (CXR_CHECKPOINT, SEG_CHECKPOINT, ANY_CHECKPOINT)
WRONG_INPUTS: dict[str, dict[str, str]] = {
    FOLDER: {"missing": "not_found", "empty_folder": "empty_input", "text_file": "usage"},
    IMAGE: {"missing": "not_found", "empty_folder": "empty_input", "text_file": "not_dicom"},
    **{kind: {"missing": "not_found", "text_file": "not_safetensors", "pickle": "unsafe_checkpoint",
              "empty_folder": "usage"} for kind in CHECKPOINT_KINDS},
    FILE: {"missing": "not_found", "empty_folder": "usage"},
    # Published weights (--init FILE, import-weights FILE): state-dict pickles are read with torch's
    # weights_only loader, so only a pickle that would call something is refused.
    WEIGHTS: {"missing": "not_found", "empty_folder": "usage", "text_file": "corrupt",
              "hostile_pickle": "unsafe_checkpoint"},
}


class CallsAFunctionWhenUnpickled:
    """Unpickling this calls ``os.getcwd`` (harmless here): what weights_only refuses."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


@dataclass(frozen=True)
class Command:
    """A subcommand's arguments: ``{name}`` placeholders are inputs of the kind in ``inputs``, filled with a
    valid stand-in except for the one argument under test."""

    arguments: tuple[str, ...]
    inputs: dict[str, str]


COMMANDS: dict[tuple[str, ...], Command] = {
    ("info",): Command(("{path}",), {"path": IMAGE}),
    ("score",): Command(("{input}", "--checkpoint", "{checkpoint}", "--out", "{out}"),
                        {"input": FOLDER, "checkpoint": CXR_CHECKPOINT}),
    ("segment",): Command(("{input}", "--checkpoint", "{checkpoint}", "--out", "{out}"),
                          {"input": IMAGE, "checkpoint": SEG_CHECKPOINT}),
    ("prepare", "cxr"): Command(("--data", "{data}", "--out", "{out}"), {"data": FOLDER}),
    ("train", "cxr"): Command(("--data", "{data}", "--out", "{out}", "--cache", "{cache}", "--init", "{init}"),
                              {"data": FOLDER, "cache": FOLDER, "init": WEIGHTS}),
    ("train", "seg"): Command(("--data", "{data}", "--out", "{out}", "--init", "{init}"),
                              {"data": FOLDER, "init": WEIGHTS}),
    ("train", "vol"): Command(("--data", "{data}", "--out", "{out}", "--labels", "{labels}", "--init", "{init}"),
                              {"data": FOLDER, "labels": FILE, "init": WEIGHTS}),
    ("import-weights",): Command(("{file}", "--from", "torchvision", "--out", "{out}"), {"file": WEIGHTS}),
    ("eval", "cxr"): Command(("--checkpoint", "{checkpoint}", "--data", "{data}", "--cache", "{cache}",
                              "--out", "{out}"), {"checkpoint": CXR_CHECKPOINT, "data": FOLDER, "cache": FOLDER}),
    ("eval", "seg"): Command(("--checkpoint", "{checkpoint}", "--data", "{data}", "--out", "{out}"),
                             {"checkpoint": SEG_CHECKPOINT, "data": FOLDER}),
    ("app",): Command(("--root", "{root}", "--checkpoint", "{checkpoint}", "--seg-checkpoint", "{seg}"),
                      {"root": FOLDER, "checkpoint": CXR_CHECKPOINT, "seg": SEG_CHECKPOINT}),
}
RESUME_COMMANDS = (("train", "cxr"), ("train", "seg"), ("train", "vol"))  # --resume RUN_DIR: a folder
PREDICTIONS_COMMANDS = (("eval", "seg"),)  # --predictions FOLDER instead of --checkpoint
NO_INPUT_COMMANDS = {("demo",): "writes its own synthetic data; --out is an output"}


def wrong_input_cases() -> list:
    """(command, argument template, inputs, argument under test, wrong input) for every combination."""
    specs = [(command, spec.arguments, spec.inputs, name) for command, spec in COMMANDS.items() for name in spec.inputs]
    specs += [(command, ("--resume", "{resume}"), {"resume": FOLDER}, "resume") for command in RESUME_COMMANDS]
    specs += [(command, ("--predictions", "{predictions}", "--data", "{data}", "--out", "{out}"),
               {"predictions": FOLDER, "data": FOLDER}, "predictions") for command in PREDICTIONS_COMMANDS]
    return [pytest.param(command, template, inputs, name, wrong, id=f"{' '.join(command)}-{name}-{wrong}")
            for command, template, inputs, name in specs for wrong in WRONG_INPUTS[inputs[name]]]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """Valid stand-ins for every kind of input, and each kind of wrong input."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "folder").mkdir()
    (root / "folder" / "file.txt").write_text("a file, so the folder is not empty\n")
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("these are notes, not an image and not weights\n")
    torch.save(create_model("chexnet_tiny").state_dict(), root / "model.pt")  # a real zip around a pickle
    torch.save({"conv.weight": CallsAFunctionWhenUnpickled()}, root / "hostile.pt")
    return {
        FOLDER: root / "folder", IMAGE: root / "folder", FILE: root / "notes.txt",
        CXR_CHECKPOINT: save_checkpoint(create_model("chexnet_tiny"), root / "cxr.safetensors"),
        SEG_CHECKPOINT: save_checkpoint(create_model("resunet3d_tiny"), root / "seg.safetensors"),
        ANY_CHECKPOINT: root / "cxr.safetensors", WEIGHTS: Path("none"),  # --init none: start from random weights
        "missing": root / "does_not_exist", "empty_folder": root / "empty", "text_file": root / "notes.txt",
        "pickle": root / "model.pt", "hostile_pickle": root / "hostile.pt", "out": root / "out",
    }


@pytest.fixture(autouse=True)
def no_server_is_started(monkeypatch):
    """`medres app` must refuse before it launches Streamlit: any process start fails the test."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a process was started for a command with a wrong input")

    monkeypatch.setattr(subprocess, "Popen", refuse)


def fill(template: tuple[str, ...], inputs: dict[str, str], under_test: str, wrong: str,
         paths: dict[str, Path]) -> list[str]:
    values = {name: str(paths[wrong] if name == under_test else paths[kind]) for name, kind in inputs.items()}
    values["out"] = str(paths["out"])
    return [argument.format(**values) for argument in template]


def test_every_subcommand_has_wrong_input_cases():
    enumerated = set(subcommands(build_parser()))
    assert {("info",), ("score",), ("segment",), ("prepare", "cxr"), ("train", "cxr"), ("train", "seg"),
            ("train", "vol"), ("eval", "cxr"), ("eval", "seg"), ("app",), ("demo",), ("import-weights",)} <= enumerated
    assert enumerated == set(COMMANDS) | set(NO_INPUT_COMMANDS), "list the new subcommand's inputs in COMMANDS"


@pytest.mark.parametrize(("command", "template", "inputs", "under_test", "wrong"), wrong_input_cases())
def test_wrong_input_exits_2_with_one_line(command, template, inputs, under_test, wrong, paths, capsys):
    kind = inputs[under_test]
    code = main([*command, *fill(template, inputs, under_test, wrong, paths)])
    captured = capsys.readouterr()
    reason = WRONG_INPUTS[kind][wrong]
    assert code == 2, captured.err
    assert captured.err.startswith(f"medres: error: {reason}: ") and captured.err.count("\n") == 1, captured.err
    assert paths[wrong].name in captured.err  # the message names what was wrong
    assert "Traceback" not in captured.err + captured.out
    assert not paths["out"].exists()  # refused before anything was written


@pytest.mark.parametrize(("option", "given", "needed"), [("--checkpoint", "seg", "chest X-ray classifier"),
                                                         ("--seg-checkpoint", "cxr", "segmentation model")])
def test_app_refuses_a_checkpoint_of_the_wrong_task_before_starting(paths, capsys, option, given, needed):
    checkpoints = {"--checkpoint": paths[CXR_CHECKPOINT], "--seg-checkpoint": paths[SEG_CHECKPOINT],
                   option: paths[SEG_CHECKPOINT if given == "seg" else CXR_CHECKPOINT]}
    code = main(["app", "--root", str(paths[FOLDER]), *[str(part) for item in checkpoints.items() for part in item]])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("medres: error: usage: ") and error.count("\n") == 1
    assert f"{option} needs a {needed}" in error


def test_app_argument_check_passes_valid_arguments(paths):
    from medres.cli.app import check_app_arguments

    args = build_parser().parse_args(["app", "--root", str(paths[FOLDER]), "--checkpoint", str(paths[CXR_CHECKPOINT]),
                                      "--seg-checkpoint", str(paths[SEG_CHECKPOINT])])
    check_app_arguments(args)  # raises on any problem


def test_score_on_a_folder_holding_only_its_own_output_is_empty(paths, tmp_path, capsys):
    (tmp_path / "in" / "out").mkdir(parents=True)
    (tmp_path / "in" / "out" / "scores.csv").write_text("path\n")
    code = main(["score", str(tmp_path / "in"), "--checkpoint", str(paths[CXR_CHECKPOINT]), "--out",
                 str(tmp_path / "in" / "out")])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("medres: error: empty_input: ") and "no files to score" in error


def test_segment_checks_its_input_before_loading_the_model(paths):
    from medres.errors import EmptyInputError, NotFoundError
    from medres.segment import SegmentConfig, segment_to_folder

    for wrong, error in (("missing", NotFoundError), ("empty_folder", EmptyInputError)):
        config = SegmentConfig(input=str(paths[wrong]), checkpoint=str(paths["pickle"]), out=str(paths["out"]))
        with pytest.raises(error):  # not unsafe_checkpoint: the checkpoint was not opened yet
            segment_to_folder(config)


def test_internal_error_is_one_line_and_the_traceback_needs_verbose(monkeypatch, capsys):
    def broken(_args):
        raise ValueError("an unexpected state\nover two lines")

    monkeypatch.setattr(info_cli, "run", broken)
    sample = str(SAMPLE_DATA / "chest.png")
    assert main(["info", sample]) == 1
    error = capsys.readouterr().err
    assert error == ("medres: internal error: ValueError: an unexpected state over two lines; "
                     "rerun with --verbose for the traceback\n")
    assert main(["info", sample, "--verbose"]) == 1  # --verbose after the subcommand works too
    error = capsys.readouterr().err
    assert error.startswith("Traceback") and error.endswith("medres: internal error: ValueError: an unexpected "
                                                            "state over two lines\n")


def test_failed_write_is_exit_1_with_the_path(monkeypatch, capsys):
    def disk_full(_args):
        raise OSError(errno.ENOSPC, "No space left on device", "/results/scores.csv")

    monkeypatch.setattr(info_cli, "run", disk_full)
    assert main(["info", str(SAMPLE_DATA / "chest.png")]) == 1
    error = capsys.readouterr().err
    assert error == "medres: error: io_error: /results/scores.csv: No space left on device (disk full? permissions?)\n"


def test_interrupt_is_exit_130(monkeypatch, capsys):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info_cli, "run", interrupted)
    assert main(["info", str(SAMPLE_DATA / "chest.png")]) == 130
    assert capsys.readouterr().err == "medres: interrupted\n"


def test_help_prints_the_exit_code_table(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    text = capsys.readouterr().out
    assert caught.value.code == 0 and "exit codes (every command)" in text
    assert all(f"  {code:<5}" in text for code in EXIT_CODES)


def test_bad_option_is_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["score", "--no-such-option"])
    assert caught.value.code == 2


LONG_COMMANDS = {
    ("score",): ["in", "--checkpoint", "c", "--out", "o"],
    ("segment",): ["in", "--checkpoint", "c", "--out", "o"],
    ("prepare", "cxr"): ["--data", "d"],
    ("train", "cxr"): ["--data", "d", "--out", "o"],
    ("train", "seg"): ["--data", "d", "--out", "o"],
    ("train", "vol"): ["--data", "d", "--out", "o"],
    ("eval", "cxr"): ["--checkpoint", "c", "--data", "d", "--out", "o"],
    ("eval", "seg"): ["--checkpoint", "c", "--data", "d", "--out", "o"],
}


@pytest.mark.parametrize("command", list(LONG_COMMANDS), ids="-".join)
def test_every_long_command_takes_no_progress(command):
    parser = build_parser()
    assert parser.parse_args([*command, *LONG_COMMANDS[command]]).progress is True
    assert parser.parse_args([*command, *LONG_COMMANDS[command], "--no-progress"]).progress is False


def test_no_progress_really_hides_the_bar(paths, tmp_path, capfd):
    volume = str(SAMPLE_DATA / "volume_oblique.nii.gz")
    arguments = ["segment", volume, "--checkpoint", str(paths[SEG_CHECKPOINT]), "--precision", "fp32"]
    assert main([*arguments, "--out", str(tmp_path / "with_bar")]) == 0
    assert "segmenting" in capfd.readouterr().err
    assert main([*arguments, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert capfd.readouterr().err == ""


@pytest.mark.skipif(not MEDRES_EXECUTABLE.exists(), reason="the console script is not installed")
def test_the_console_script_prints_no_traceback(paths, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", ORIGINAL_POPEN)  # this test's own process is the real command
    result = subprocess.run([str(MEDRES_EXECUTABLE), "app", "--root", str(paths[FOLDER]), "--checkpoint",
                             str(paths["pickle"])], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("medres: error: unsafe_checkpoint: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr

