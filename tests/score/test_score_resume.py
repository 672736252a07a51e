"""Killed at random moments and restarted, a run ends with the tables of an uninterrupted one."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from medres.score import ScoreConfig, score_folder
from medres.score.journal import Journal, read_records
from tests.conftest import subprocess_environment
from tests.score.conftest import KEY, table_rows, write_junk, write_synthetic_dicoms

N_KILLS = 5
N_FILMS = 96
MID_SCORING_DELAY_S = 0.1  # kills land this soon after journaling starts: the tiny model then needs well under 1 s


def journal_lines(out: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in out.glob("journal-rank*.jsonl"))


def kill_at_random_moment(command: list[str], out: Path, rng: random.Random, attempt: int) -> None:
    """Start a run and SIGKILL it.

    Attempt 0 dies at a random moment of start-up (at the latest when the
    first records are journaled: a whole run takes about as long as
    start-up), attempts 1 to 3 at a
    random moment after they start journaling (mid-scoring), and the last
    one as soon as it starts writing a temporary table (mid-commit). Each
    kill must find the run still going and unfinished (no ``run.json``):
    a run that ended before its kill would test no resumption at all.
    """
    before = journal_lines(out)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=subprocess_environment())
    if attempt == 0:
        _wait(process, lambda: journal_lines(out) > before, rng.uniform(0.2, 3.0))
    elif attempt < N_KILLS - 1:
        _wait(process, lambda: journal_lines(out) > before, 120)
        _wait(process, lambda: False, rng.uniform(0.0, MID_SCORING_DELAY_S))
    else:
        _wait(process, lambda: any(out.glob(".medres-tmp-*")), 120)
    assert process.poll() is None, f"kill {attempt}: the run ended before it, so nothing was interrupted"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, f"kill {attempt}: the run ended on its own"
    assert not (out / "run.json").exists(), f"kill {attempt}: the run had finished (run.json written)"


def _wait(process: subprocess.Popen, condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.002)


@pytest.fixture(scope="module")
def resumable_folder(tmp_path_factory, synthetic_pngs) -> Path:
    root = tmp_path_factory.mktemp("resumable")
    paths = write_synthetic_dicoms(root / "films", synthetic_pngs, N_FILMS)
    write_junk(root / "junk", paths[4])
    return root


@pytest.mark.slow
def test_killed_and_restarted_run_equals_uninterrupted_run(resumable_folder, tiny_checkpoint, tmp_path):
    options = dict(batch_size=2, workers=1, pseudonym_key=KEY, progress=False)
    reference = tmp_path / "reference"
    score_folder(ScoreConfig(str(resumable_folder), str(tiny_checkpoint), str(reference), **options))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "medres", "score", str(resumable_folder), "--checkpoint", str(tiny_checkpoint),
               "--out", str(out), "--batch-size", "2", "--workers", "1", "--pseudonym-key", KEY, "--no-progress"]
    rng = random.Random(20240611)
    for attempt in range(N_KILLS):
        kill_at_random_moment(command, out, rng, attempt)
    summary = score_folder(ScoreConfig(str(resumable_folder), str(tiny_checkpoint), str(out), **options))
    for table in ("scores", "errors"):
        assert sorted(map(json.dumps, table_rows(out, table))) == sorted(map(json.dumps, table_rows(reference, table)))
    assert (out / "scores.csv").read_bytes() == (reference / "scores.csv").read_bytes()
    keys = Counter(record["key"] for record in read_records(out))
    assert max(keys.values()) == 1  # every file journaled exactly once across all the restarts
    assert summary.counts["files_found"] == len(keys) == N_FILMS + 4
    assert not list(out.glob(".medres-tmp-*"))


def test_partial_last_journal_line_is_ignored_and_cut(tmp_path):
    path = tmp_path / "journal-rank0.jsonl"
    with Journal(path) as journal:
        journal.append([{"key": "a", "outcome": "skipped"}, {"key": "b", "outcome": "failed"}])
    with open(path, "ab") as stream:
        stream.write(b'{"v":1,"key":"c","outcome":"sco')  # killed mid-write
    assert [record["key"] for record in read_records(tmp_path)] == ["a", "b"]
    with Journal(path) as journal:
        journal.append([{"key": "c", "outcome": "scored"}])
    assert [record["key"] for record in read_records(tmp_path)] == ["a", "b", "c"]
    assert path.read_bytes().count(b"\n") == 3


def test_rerun_skips_done_files_and_changed_files_are_rescored(tmp_path, tiny_checkpoint, synthetic_pngs):
    paths = write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 4, special=False)
    config = ScoreConfig(str(tmp_path / "in"), str(tiny_checkpoint), str(tmp_path / "out"), progress=False)
    first = score_folder(config)
    second = score_folder(config)
    assert first.run["this_run"]["scored"] == 4 and second.run["this_run"]["resumed_from_journal"] == 4
    paths[0].write_bytes(paths[0].read_bytes() + b"\0\0")  # changed: new size, new journal key
    third = score_folder(config)
    assert third.run["this_run"]["scored"] == 1 and third.counts["scored"] == 4
    assert len(table_rows(tmp_path / "out", "scores")) == 4
