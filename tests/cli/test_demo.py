"""`medres demo --quick`: the product tour end to end through the CLI (every journey), each step its own process."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from medres.cli import demo
from medres.cli.main import main
from tests.app.test_browser import free_port, wait_until_serving


@pytest.mark.slow
def test_quick_tour_runs_every_journey(tmp_path, capsys, monkeypatch):
    # Each step is a process of its own: give it the one torch thread that tests/conftest.py gives this one.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "medres app --root" in printed
    assert f"$ {demo.medres_executable()} train cxr --data {out / 'chestxray14'}" in printed
    assert (out / "reports" / "cxr" / "report.md").is_file()
    with open(out / "scores" / "scores.csv") as stream:
        scored = list(csv.DictReader(stream))
    assert any(row["path"].endswith("RG1_UNCR.dcm") for row in scored)  # the real MONOCHROME1 chest CR
    assert (out / "runs" / "seg" / "best.safetensors").is_file()
    assert any((out / "segmentation").rglob("*.nii.gz")) and any((out / "segmentation").rglob("*.dcm"))
    for leaked in ("Synthetic^Phantom", "SYNTHETIC-0001"):
        assert leaked not in (out / "scores" / "scores.csv").read_text()
    assert_printed_app_command_starts_the_app(printed)


def assert_printed_app_command_starts_the_app(printed: str) -> None:
    """The app command the demo prints, typed into a new shell without the venv activated, serves the app."""
    lines = printed.splitlines()
    command = lines[lines.index("Open the review app on these results (in this folder, from any shell):") + 1].strip()
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(entry for entry in os.environ["PATH"].split(os.pathsep) if entry != venv_bin)
    shell_environment = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"} | {"PATH": path}
    server = subprocess.Popen(["bash", "-c", f"exec {command} --port {port} --address 127.0.0.1"],
                              env=shell_environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)



def test_a_step_runs_the_typed_command_in_its_own_process(tmp_path, capfd):
    """The echoed command line comes first, then the output of `python -m medres` itself."""
    echoed: list[str] = []
    settings = demo.TourSettings(out=tmp_path, echo=echoed.append)
    demo.run_command(["info", "--help"], settings)
    assert echoed == [f"\n$ {demo.medres_executable()} info --help"]
    assert "usage: medres info" in capfd.readouterr().out  # argparse's prog: the real `medres` parser ran


def test_no_progress_is_passed_to_each_step(tmp_path, capfd):
    echoed: list[str] = []
    settings = demo.TourSettings(out=tmp_path, echo=echoed.append, progress=False)
    arguments = ["prepare", "cxr", "--data", str(tmp_path / "missing"), "--size", "64", "--out", str(tmp_path / "c")]
    with pytest.raises(demo.StepFailedError) as failure:
        demo.run_command(arguments, settings)
    assert echoed[0].endswith(" --no-progress")
    assert failure.value.code == 2
    errors = capfd.readouterr().err
    assert "not_found" in errors and "unrecognized arguments" not in errors  # `prepare` took --no-progress


def test_a_failed_step_stops_the_demo_with_that_commands_exit_code(tmp_path, capfd, monkeypatch):
    def fail_at_once(settings: demo.TourSettings) -> dict:
        demo.run_command(["info", str(tmp_path / "missing.dcm")], settings)
        return {}

    monkeypatch.setattr(demo, "samples_step", fail_at_once)
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 2
    errors = capfd.readouterr().err
    assert "not_found" in errors  # the step's own one-line reason, from its own process
    assert "medres demo: stopped: `medres info" in errors and "exited with 2" in errors
