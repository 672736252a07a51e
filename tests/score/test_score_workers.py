"""Decoder workers that crash, torchrun sharding, and the link-safe walk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medres.score.worker as worker
from medres.score import ScoreConfig, score_folder
from medres.score.discover import shard, walk_folder
from tests.conftest import subprocess_environment
from tests.score.conftest import KEY, table_rows, write_synthetic_dicoms

REPO = Path(__file__).resolve().parents[2]


def test_a_worker_crash_costs_one_file(tmp_path, tiny_checkpoint, synthetic_pngs, monkeypatch):
    paths = write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 9, special=False)
    crashing = paths[4].rename(paths[4].with_name("crash.dcm"))
    real_decode = worker.decode_dicom

    def decode_or_die(dataset, path):
        if Path(path).name == "crash.dcm":
            os._exit(1)  # what a segfaulting C decoder looks like to the pool
        return real_decode(dataset, path)

    monkeypatch.setattr(worker, "decode_dicom", decode_or_die)  # workers are forked: they inherit it
    summary = score_folder(ScoreConfig(str(tmp_path / "in"), str(tiny_checkpoint), str(tmp_path / "out"),
                                       workers=2, batch_size=2, progress=False))
    errors = table_rows(tmp_path / "out", "errors")
    assert [(row["path"], row["outcome"], row["reason"]) for row in errors] == [
        (str(crashing.relative_to(tmp_path / "in")), "failed", "worker_crashed")]
    assert len(table_rows(tmp_path / "out", "scores")) == 8
    assert summary.exit_code == 3 and summary.run["this_run"]["worker_restarts"] >= 1


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, tiny_checkpoint, synthetic_pngs):
    write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 13)
    (tmp_path / "in" / "notes.txt").write_text("skipped, not failed: torchrun reports any non-zero exit as 1")
    options = ["--checkpoint", str(tiny_checkpoint), "--pseudonym-key", KEY, "--batch-size", "4", "--workers", "1",
               "--no-progress"]
    single = score_folder(ScoreConfig(str(tmp_path / "in"), str(tiny_checkpoint), str(tmp_path / "single"),
                                      batch_size=4, workers=1, pseudonym_key=KEY, progress=False))
    torchrun = Path(sys.executable).parent / "torchrun"  # the venv's, next to its python
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
               "-m", "medres", "score", str(tmp_path / "in"), "--out", str(tmp_path / "multi"), *options]
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_environment(), timeout=300,
                            cwd=REPO)
    assert result.returncode == single.exit_code == 0, result.stderr[-3000:]
    for table in ("scores.csv", "errors.csv"):
        assert (tmp_path / "multi" / table).read_bytes() == (tmp_path / "single" / table).read_bytes()
    assert sorted(path.name for path in (tmp_path / "multi").glob("journal-rank*.jsonl")) == [
        "journal-rank0.jsonl", "journal-rank1.jsonl"]


def test_walk_is_sorted_skips_links_out_and_excludes_the_output(tmp_path):
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    for name in ("a/b/2.dcm", "a/b/1.dcm", "a.txt", "z.png"):
        (root / name).write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.dcm").write_text("x")
    os.symlink(tmp_path / "elsewhere" / "secret.dcm", root / "out_file.dcm")
    os.symlink(tmp_path / "elsewhere", root / "out_folder")
    os.symlink(root / "a", root / "in_folder")
    os.symlink(root / "z.png", root / "in_file.png")
    (root / "results").mkdir()
    (root / "results" / "scores.csv").write_text("x")
    entries = list(walk_folder(root, exclude=root / "results"))
    assert [entry.relative for entry in entries] == [
        "a/b/1.dcm", "a/b/2.dcm", "a.txt", "in_file.png", "in_folder", "out_file.dcm", "out_folder", "z.png"]
    reasons = {entry.relative: entry.skip.reason for entry in entries if entry.skip}
    assert reasons == {"in_folder": "linked_folder", "out_file.dcm": "outside_root", "out_folder": "outside_root"}
    assert [item for rank in range(3) for item in shard(range(8), rank, 3)] == [0, 3, 6, 1, 4, 7, 2, 5]


@pytest.mark.parametrize("rows,columns,levels", [(1955, 1841, 2), (512, 512, 1), (300, 4000, 0)])
def test_reduction_levels_keep_the_stored_size(rows, columns, levels):
    from medres.score.reduced import reduction_levels

    assert reduction_levels(rows, columns, 256) == levels


def test_reduced_j2k_decoding_scores_close_to_full(tmp_path, tiny_checkpoint, synthetic_pngs):
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    from medres.synthetic.dicom import write_dicom

    for index, path in enumerate(write_synthetic_dicoms(tmp_path / "plain", synthetic_pngs, 3, special=False)):
        dataset = pydicom.dcmread(path)
        big = np.kron(dataset.pixel_array, np.ones((6, 6), np.uint16))  # 576 px: one halving still >= 256
        dataset.PixelData, (dataset.Rows, dataset.Columns) = big.tobytes(), big.shape
        dataset.compress(JPEG2000Lossless)
        write_dicom(dataset, tmp_path / "j2k" / f"film{index}.dcm")
    from medres.models import read_card
    from medres.score.reduced import decode_reduced_if_j2k

    sample = tmp_path / "j2k" / "film0.dcm"
    image = decode_reduced_if_j2k(pydicom.dcmread(sample), sample, read_card(tiny_checkpoint), 2**30)
    assert image.array.shape == (1, 288, 288) and image.meta["reduced_resolution_levels"] == 1
    probabilities = {}
    for reduced in (False, True):
        out = tmp_path / f"out_{reduced}"
        score_folder(ScoreConfig(str(tmp_path / "j2k"), str(tiny_checkpoint), str(out), pseudonym_key=KEY,
                                 reduced_j2k=reduced, progress=False))
        rows = table_rows(out, "scores")
        probabilities[reduced] = np.array([[float(v) for k, v in row.items() if k.startswith("prob_")] for row in rows])
    assert probabilities[True].shape == (3, 14)
    assert np.abs(probabilities[True] - probabilities[False]).max() < 0.02


def test_schedules_give_identical_tables(tmp_path, tiny_checkpoint, synthetic_pngs):
    write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 11)
    for schedule in ("alternate", "overlap"):
        score_folder(ScoreConfig(str(tmp_path / "in"), str(tiny_checkpoint), str(tmp_path / schedule), workers=2,
                                 batch_size=4, schedule=schedule, pseudonym_key=KEY, progress=False))
    for table in ("scores.csv", "errors.csv"):
        assert (tmp_path / "alternate" / table).read_bytes() == (tmp_path / "overlap" / table).read_bytes()
