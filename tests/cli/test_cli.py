"""The medres command: exit codes, one-line errors, no tracebacks, help everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medres.cli.inputs import INPUT_ARGUMENTS
from medres.cli.main import build_parser, main, subcommands
from tests.conftest import SAMPLE_DATA


def test_info_prints_json_without_identifiers(capsys):
    assert main(["info", str(SAMPLE_DATA / "cr_chest_monochrome1.dcm"), "--json"]) == 0
    output = capsys.readouterr().out
    summary = json.loads(output)
    assert summary["shape"] == [1, 384, 320] and summary["meta"]["photometric_interpretation"] == "MONOCHROME1"
    assert "Synthetic" not in output and "SYNTHETIC-0001" not in output


def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, capsys):
    (tmp_path / "junk.dcm").write_text("junk")
    assert main(["info", str(tmp_path / "junk.dcm")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("medres: error: not_dicom:") and error.count("\n") == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_is_accepted_before_or_after_the_subcommand(where):
    sample = str(SAMPLE_DATA / "chest.png")
    argv = ["--verbose", "info", sample] if where == "before" else ["info", sample, "--verbose"]
    assert build_parser().parse_args(argv).verbose is True
    assert build_parser().parse_args(["info", sample]).verbose is False


def test_subcommands_are_enumerated_from_the_parser():
    found = subcommands(build_parser())
    assert ("train", "cxr") in found and ("eval", "seg") in found and ("train",) not in found
    assert all(set(INPUT_ARGUMENTS[command]) <= {action.dest for action in parser._actions}
               for command, parser in found.items()), "INPUT_ARGUMENTS names an argument a command does not have"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["info"], ["demo"]])
def test_help_everywhere(command):
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0


def test_console_script_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "medres", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("medres ")
