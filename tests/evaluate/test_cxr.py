"""Chest X-ray evaluation report: undefined labels, thresholds from val, subgroups, the calibrated checkpoint."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from medres.data.chestxray14 import LABELS, load_chestxray14
from medres.errors import UsageError
from medres.evaluate import cxr as cxr_report
from medres.evaluate.cxr import (
    CxrEvalConfig,
    SplitPredictions,
    calibrated_card,
    describe_setup,
    evaluate_predictions,
    json_safe,
    operating_points,
    read_checkpoint_once,
    refuse_to_overwrite,
    subgroup_masks,
    write_calibrated_checkpoint,
)
from medres.evaluate.cxr_report import load_published_auroc, render_report
from medres.metrics import MetricUndefinedWarning, choose_thresholds
from medres.models import (
    checkpoint_sha256,
    create_model,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from medres.synthetic.chestxray14 import make_chestxray14

N_BOOT = 30


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chestxray14(tmp_path_factory.mktemp("report") / "cxr14", 120, seed=0, image_size=64)


def fake_predictions(table: pd.DataFrame, split: str, seed: int = 0) -> SplitPredictions:
    """Scores that follow the labels loosely, so AUROCs are defined and not trivial; no model needed."""
    rows = table[table["split"] == split].reset_index(drop=True)
    targets = rows[list(LABELS)].to_numpy(dtype=np.int8)
    scores = 1 / (1 + np.exp(-(targets * 1.5 + np.random.default_rng(seed).normal(size=targets.shape))))
    return SplitPredictions(split, rows, scores, targets)


def test_label_absent_from_split_is_null_and_left_out_of_means(data_root: Path) -> None:
    table = load_chestxray14(data_root).table
    test = fake_predictions(table, "test")
    without_hernia = test.select(test.table["Hernia"].to_numpy() == 0)  # craft the absent label by filtering
    assert without_hernia.targets[:, LABELS.index("Hernia")].sum() == 0 and len(without_hernia.table) > 0
    with pytest.warns(MetricUndefinedWarning) as caught:
        metrics = evaluate_predictions(without_hernia, fake_predictions(table, "val", seed=1), LABELS, N_BOOT)
    assert any("'Hernia'" in str(warning.message) for warning in caught)
    summary = metrics["summary"]
    hernia = summary["per_label"]["Hernia"]
    assert hernia["auroc"] is None and hernia["auroc_ci"] == [None, None]
    assert "Hernia" in metrics["undefined_labels"]
    defined = [
        roc_auc_score(without_hernia.targets[:, column], without_hernia.probabilities[:, column])
        for column in range(len(LABELS))
        if 0 < without_hernia.targets[:, column].sum() < len(without_hernia.table)
    ]
    assert len(defined) == len(LABELS) - len(metrics["undefined_labels"])
    assert summary["mean_auroc"] == pytest.approx(np.mean(defined), abs=1e-12)
    assert metrics["published"]["per_label"]["Hernia"]["this_evaluation"] is None
    assert metrics["thresholds"]["per_label"]["Hernia"]["youden"]["sensitivity"] is None  # no positives to detect
    json.dumps(json_safe(metrics), allow_nan=False)  # NaN never reaches the JSON


def test_operating_points_apply_val_thresholds_with_greater_or_equal() -> None:
    table = pd.DataFrame({"image": list("abcdef"), "patient_id": range(6)})
    truth = np.array([[1], [1], [1], [0], [0], [0]], dtype=np.int8)
    scores = np.array([[0.9], [0.6], [0.3], [0.6], [0.2], [0.1]])
    evaluated = SplitPredictions("test", table, scores, truth)
    points = operating_points(evaluated, {"Mass": {"youden": 0.6, "sensitivity_90": math.nan}}, ["Mass"])
    assert points["Mass"]["youden"] == {"threshold": 0.6, "sensitivity": 2 / 3, "specificity": 2 / 3}
    assert points["Mass"]["sensitivity_90"] == {"threshold": None, "sensitivity": None, "specificity": None}


def test_thresholds_come_from_val_not_from_the_evaluated_split(data_root: Path) -> None:
    table = load_chestxray14(data_root).table
    test, val = fake_predictions(table, "test"), fake_predictions(table, "val", seed=1)
    with pytest.warns(MetricUndefinedWarning):
        metrics = evaluate_predictions(test, val, LABELS, N_BOOT)
        expected = choose_thresholds(val.targets, val.probabilities, LABELS)
    for label in LABELS:
        chosen = metrics["thresholds"]["per_label"][label]["youden"]["threshold"]
        assert (chosen is None and math.isnan(expected[label]["youden"])) or chosen == expected[label]["youden"]
    assert metrics["thresholds"]["n_images"] == len(val.table) and metrics["thresholds"]["split"] == "val"


def test_subgroup_age_bands_are_half_open_and_missing_ages_unknown() -> None:
    table = pd.DataFrame({"sex": ["M", "F", "M", "F", "M", "M", "F"],
                          "view": ["PA", "AP", "PA", "PA", "AP", "PA", "AP"],
                          "age": pd.array([19, 20, 39, 40, 79, 80, None], dtype="Int64")})
    counts = {(attribute, group): int(mask.sum()) for attribute, group, mask in subgroup_masks(table)}
    assert counts[("age", "<20")] == 1 and counts[("age", "20-40")] == 2 and counts[("age", "40-60")] == 1
    assert counts[("age", "60-80")] == 1 and counts[("age", ">=80")] == 1 and counts[("age", "unknown")] == 1
    assert counts[("sex", "M")] == 4 and counts[("view", "AP")] == 3


def test_subgroup_table_counts_and_json(data_root: Path) -> None:
    table = load_chestxray14(data_root).table
    test = fake_predictions(table, "test")
    with pytest.warns(MetricUndefinedWarning):
        metrics = evaluate_predictions(test, fake_predictions(table, "val", seed=1), LABELS, N_BOOT)
    rows = {(row["attribute"], row["group"]): row for row in metrics["subgroups"]}
    assert rows[("sex", "M")]["n_images"] + rows[("sex", "F")]["n_images"] == len(test.table)
    assert rows[("view", "PA")]["n_images"] + rows[("view", "AP")]["n_images"] == len(test.table)
    for row in metrics["subgroups"]:
        defined = [value for value in row["auroc"].values() if value is not None and not math.isnan(value)]
        assert row["n_labels_defined"] == len(defined)


def test_published_table_ships_with_the_package_with_sources() -> None:
    table, sources = load_published_auroc()
    assert list(table.index) == list(LABELS) and table.shape == (14, 5)
    assert table.mean().round(3).tolist() == [0.841, 0.745, 0.848, 0.838, 0.851]  # the reference README's means
    assert set(sources) == set(table.columns) and "1711.05225" in sources["chexnet_2017"]


def test_report_on_official_split_names_the_shared_benchmark_and_not_synthetic(data_root: Path, tmp_path: Path) -> None:
    index = load_chestxray14(data_root)
    test, val = fake_predictions(index.table, "test"), fake_predictions(index.table, "val", seed=1)
    with pytest.warns(MetricUndefinedWarning):
        metrics = evaluate_predictions(test, val, LABELS, N_BOOT)
    config = CxrEvalConfig(checkpoint="model.safetensors", data=str(tmp_path), out=str(tmp_path / "out"))
    metrics["setup"] = describe_setup(config, create_model("chexnet_tiny").card, index, test, val, (0.1, 0, "defaults"))
    metrics["setup"]["checkpoint"]["sha256"] = "0" * 64
    metrics["setup"]["calibrated_checkpoint"] = {"path": None, "sha256": None, "written": False, "thresholds": {}}
    report = render_report(json_safe(metrics))
    assert "SYNTHETIC" not in report and "official test list" in report and "not written" in report
    assert "| **Mean** |" in report and "CheXNet 2017" in report


def test_calibrated_checkpoint_keeps_tensors_and_metadata_and_leaves_the_source(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), tmp_path / "best.safetensors",
                           extra_metadata={"epoch": "3"})
    source_sha = checkpoint_sha256(path)
    model, sha_read, metadata = read_checkpoint_once(path)
    assert sha_read == source_sha and metadata == {"epoch": "3"}
    points = {label: {rule: {"threshold": 0.25 if label == "Mass" else None} for rule in ("youden", "sensitivity_90")}
              for label in model.card.labels}
    card = calibrated_card(model.card, points, "abc", sha_read)
    calibrated = write_calibrated_checkpoint(model, card, tmp_path / "report" / "calibrated.safetensors", metadata)
    assert checkpoint_sha256(path) == source_sha and read_card(path) == model.card  # the source is untouched
    new_card = read_card(calibrated)
    assert new_card == card and new_card.thresholds["Mass"] == 0.25
    assert new_card.thresholds["Hernia"] == model.card.thresholds["Hernia"]  # no threshold chosen: kept
    assert new_card.extra["thresholds"]["Mass"] == {"youden": 0.25, "sensitivity_90": 0.25}
    assert new_card.extra["thresholds_source"] == "val split, Youden J"
    assert new_card.extra["calibrated_from_sha256"] == source_sha
    before, after = load_file(path), load_file(calibrated)
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
    with safe_open(calibrated, framework="pt") as handle:
        assert handle.metadata()["epoch"] == "3"
    assert load_checkpoint(calibrated).card == new_card


def test_a_checkpoint_replaced_while_it_is_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), tmp_path / "best.safetensors")
    real_load = cxr_report.load_checkpoint

    def load_then_training_saves_a_new_best(*args, **kwargs):
        model = real_load(*args, **kwargs)
        torch.manual_seed(1)
        save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), path)
        return model

    monkeypatch.setattr(cxr_report, "load_checkpoint", load_then_training_saves_a_new_best)
    with pytest.raises(UsageError, match="changed on disk while it was read"):
        read_checkpoint_once(path)


def test_out_folder_holding_the_evaluated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), tmp_path / "calibrated.safetensors")
    with pytest.raises(UsageError, match="would overwrite the checkpoint being evaluated"):
        refuse_to_overwrite(path, tmp_path / "." / "calibrated.safetensors")
    refuse_to_overwrite(path, tmp_path / "other" / "calibrated.safetensors")  # another folder is fine


def test_json_safe_turns_nan_and_numpy_into_plain_json() -> None:
    value = json_safe({"a": np.float32(0.5), "b": math.nan, "c": [np.int64(3), np.bool_(True), pd.NA, math.inf]})
    assert json.dumps(value, allow_nan=False) == '{"a": 0.5, "b": null, "c": [3, true, null, null]}'


def test_progress_bar_never_replaces_the_model_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm.update returns True whenever it redraws; a forward hook returning it would replace the logits."""
    class AlwaysRedrawing(cxr_report.tqdm):
        def update(self, n: float = 1) -> bool:
            super().update(n)
            return True

    monkeypatch.setattr(cxr_report, "tqdm", AlwaysRedrawing)
    model = create_model("chexnet_tiny", input_size=(64, 64)).eval()
    inputs = torch.zeros(2, 1, 64, 64)
    with torch.no_grad():
        expected = model(inputs)
        with cxr_report._progress_bar(model, 2, "test", enabled=False):
            hooked = model(inputs)
    assert torch.equal(hooked, expected)


@pytest.mark.parametrize(("n_labels", "height"), [(14, 1620), (3, 720)])
def test_reliability_png_has_a_pooled_row_and_a_grid_row_per_four_labels(n_labels: int, height: int) -> None:
    """Pooled panel on top (420 px), then 300 px per row of four label panels; a label with no positives draws."""
    from PIL import Image as PILImage

    from medres.evaluate.plots import reliability_png

    rng = np.random.default_rng(0)
    truth = (rng.random((200, n_labels)) < 0.2).astype(np.int8)
    truth[:, 0] = 0  # one class only: its panel still shows the curve and ECE
    scores = np.clip(truth * 0.5 + rng.random(truth.shape) * 0.5, 0, 1)
    png = reliability_png(truth, scores, list(LABELS[:n_labels]), 10, "test split")
    assert PILImage.open(io.BytesIO(png)).size == (1200, height)
