"""Training through the CLI: it learns, resumes after SIGKILL, runs under torchrun, stops on NaN."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medres.cli.main import main
from medres.models import create_model, load_checkpoint, read_card, save_checkpoint
from medres.synthetic.chestxray14 import make_chestxray14
from medres.train.loop import NonFiniteLossError, TrainConfig, fit

BIN = Path(sys.executable).parent


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as stream:
        return list(csv.DictReader(stream))


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "medres"), "train", "cxr", "--data", str(data), "--out", str(out), "--model", "chexnet_tiny",
            "--input-size", "64", "--batch-size", "16", *extra]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cxr")
    make_chestxray14(root, 160, seed=5, image_size=64)
    return root


@pytest.mark.slow
def test_trained_chexnet_tiny_reaches_validation_auroc_090(trained_cxr_run, capsys):
    rows = read_metrics(trained_cxr_run)
    best = max(float(row["val_mean_auroc"]) for row in rows)
    with capsys.disabled():
        print(f"\nchexnet_tiny on 2,000 synthetic images: best validation mean AUROC {best:.3f} "
              f"after {len(rows)} epochs")
    assert best >= 0.90
    model = load_checkpoint(trained_cxr_run / "best.safetensors")
    assert model.card.training_data_fingerprint and model.card.stored_size == 128


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_data, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(train_command(tiny_data, reference, "--epochs", "3", "--checkpoint-every", "2"),
                   check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(train_command(tiny_data, killed, "--epochs", "3", "--checkpoint-every", "2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_mid_epoch_state(killed / "state.safetensors", process)
    assert process.poll() is None, "training ended before the kill: nothing would be resumed"
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended on its own, not by the kill"
    assert not (killed / "metrics.csv").exists() or len(read_metrics(killed)) < 3, "the run was complete"
    for checkpoint in killed.glob("*.safetensors"):  # whatever is there is complete
        if checkpoint.name != "state.safetensors":
            load_checkpoint(checkpoint)
    assert main(["train", "cxr", "--resume", str(killed)]) == 0
    expected, resumed = read_metrics(reference), read_metrics(killed)
    assert [row["epoch"] for row in resumed] == [row["epoch"] for row in expected]
    assert [row["global_step"] for row in resumed] == [row["global_step"] for row in expected]
    for mine, theirs in zip(resumed, expected):
        assert float(mine["val_mean_auroc"]) == pytest.approx(float(theirs["val_mean_auroc"]), abs=1e-3)


def _wait_for_mid_epoch_state(state: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and state.stat().st_size > 0:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    pytest.fail("training never wrote a mid-epoch state")


@pytest.mark.slow
def test_torchrun_two_processes_only_rank_0_writes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    command = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "medres",
               *train_command(tiny_data, out, "--epochs", "1")[1:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_metrics(out)
    n_train = int(rows[0]["global_step"])
    assert len(rows) == 1
    single = subprocess.run(train_command(tiny_data, tmp_path / "single", "--epochs", "1"), capture_output=True)
    assert single.returncode == 0
    assert n_train * 2 == pytest.approx(int(read_metrics(tmp_path / "single")[0]["global_step"]), abs=1)
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["best.safetensors", "last.safetensors", "state.safetensors", "metrics.csv", "config.json",
         "train_config.json", "data_index.txt"])


def test_non_finite_loss_stops_and_never_becomes_best(tmp_path):
    model = create_model("chexnet_tiny", input_size=(32, 32))
    data = [(torch.randn(1, 32, 32), torch.zeros(14)) for _ in range(8)]
    nan_loss = lambda outputs, targets: outputs.sum() * float("nan")  # noqa: E731
    validate = lambda net: {"val_loss": 0.0, "score": 1.0}  # noqa: E731
    with pytest.raises(NonFiniteLossError, match="loss nan"):
        fit(model, data, validate, nan_loss, TrainConfig(epochs=1, batch_size=4, progress=False), tmp_path)
    assert not (tmp_path / "best.safetensors").exists()


def test_init_with_mismatched_weights_lists_the_mismatch(tiny_data, tmp_path, capsys):
    other = create_model("chexnet_tiny", labels=("A", "B"))
    save_checkpoint(other, tmp_path / "other.safetensors")
    code = main(["train", "cxr", "--data", str(tiny_data), "--out", str(tmp_path / "run"), "--model", "chexnet_tiny",
                 "--init", str(tmp_path / "other.safetensors"), "--epochs", "1"])
    assert code == 2
    assert "checkpoint_mismatch" in capsys.readouterr().err
    assert read_card(tmp_path / "other.safetensors").labels == ("A", "B")
