"""The loop's learning-rate schedules: nnU-Net's poly decay, the plateau rule, and both across a resume."""

from __future__ import annotations

import csv

import pytest
import torch

from medres.errors import UsageError
from medres.models import create_model
from medres.train.loop import TrainConfig, fit, make_scheduler


class CrashAtEpoch(list):
    """A training set that dies when the loop starts epoch ``crash_epoch`` (a killed run)."""

    def __init__(self, items, crash_epoch):
        super().__init__(items)
        self.crash_epoch = crash_epoch

    def set_epoch(self, epoch):
        if epoch == self.crash_epoch:
            raise KeyboardInterrupt("killed")


def tiny_run(run_dir, train_set, schedule, val_losses=None):
    model = create_model("chexnet_tiny", input_size=(32, 32))
    losses = iter(val_losses or [])
    validate = lambda net: {"val_loss": next(losses, 1.0), "score": 0.5}  # noqa: E731
    config = TrainConfig(epochs=5, batch_size=4, learning_rate=0.01, lr_schedule=schedule, plateau_factor=0.5,
                         plateau_patience=0, early_stopping_patience=99, progress=False)
    loss = torch.nn.BCEWithLogitsLoss()
    return fit(model, train_set, validate, loss, config, run_dir, resume=True)


def recorded_rates(run_dir):
    with open(run_dir / "metrics.csv") as stream:
        return [float(row["lr"]) for row in csv.DictReader(stream)]


@pytest.fixture
def batches():
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(1, 32, 32, generator=generator), torch.zeros(14)) for _ in range(8)]


def test_poly_decays_to_zero_as_nnunet_does_and_records_the_rate_each_epoch_used(batches, tmp_path):
    tiny_run(tmp_path, batches, "poly")
    assert recorded_rates(tmp_path) == pytest.approx([0.01 * (1 - epoch / 5) ** 0.9 for epoch in range(5)])


def test_poly_resumes_on_its_curve_after_a_crash(batches, tmp_path):
    tiny_run(tmp_path / "whole", batches, "poly")
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path / "killed", CrashAtEpoch(batches, crash_epoch=2), "poly")
    assert len(recorded_rates(tmp_path / "killed")) == 2
    tiny_run(tmp_path / "killed", batches, "poly")
    assert recorded_rates(tmp_path / "killed") == pytest.approx(recorded_rates(tmp_path / "whole"))


def test_plateau_lowers_the_rate_only_after_the_loss_stalls(batches, tmp_path):
    tiny_run(tmp_path, batches, "plateau", val_losses=[1.0, 0.5, 0.6, 0.4, 0.4])
    assert recorded_rates(tmp_path) == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005])


def test_an_unknown_schedule_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(UsageError, match="plateau or poly"):
        make_scheduler(optimizer, TrainConfig(lr_schedule="cosine"))
