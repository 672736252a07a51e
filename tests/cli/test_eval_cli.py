"""``medres eval cxr`` end to end on a tiny synthetic ChestX-ray14 and an untrained tiny model.

The model is untrained on purpose: these tests check the pipeline (files,
JSON validity, agreement with scikit-learn, the calibrated checkpoint), not the AUROC.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medres.cli.main import main
from medres.data.chestxray14 import LABELS, load_chestxray14
from medres.metrics import MetricUndefinedWarning, choose_thresholds
from medres.models import checkpoint_sha256, create_model, load_checkpoint, read_card, save_checkpoint
from medres.synthetic.chestxray14 import make_chestxray14

OUTPUT_FILES = ("report.md", "metrics.json", "roc_curves.png", "reliability.png", "predictions.csv",
                "calibrated.safetensors", "localisation.csv", "localisation_gallery.png")
N_BOOT = "40"
pytestmark = pytest.mark.filterwarnings("ignore::medres.metrics.MetricUndefinedWarning")  # tiny splits lack positives


class EvalRun(NamedTuple):
    data: Path
    checkpoint: Path
    out: Path
    exit_code: int
    sha256_before: str


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN/Infinity, i.e. what allow_nan=False would have written."""
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_chestxray14(tmp_path_factory.mktemp("eval_cli") / "cxr14", 120, seed=0, image_size=64)


def untrained_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), path)


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> EvalRun:
    folder = tmp_path_factory.mktemp("eval_run")
    checkpoint = untrained_checkpoint(folder / "model.safetensors")
    sha256_before = checkpoint_sha256(checkpoint)
    out = folder / "report"
    exit_code = main(["eval", "cxr", "--checkpoint", str(checkpoint), "--data", str(data_root), "--split", "test",
                      "--out", str(out), "--n-boot", N_BOOT, "--batch-size", "16"])
    return EvalRun(data_root, checkpoint, out, exit_code, sha256_before)


def read_predictions(run: EvalRun) -> pd.DataFrame:
    return pd.read_csv(run.out / "predictions.csv")


def test_exit_code_and_every_output_written_without_leftovers(run: EvalRun) -> None:
    assert run.exit_code == 0
    assert sorted(path.name for path in run.out.iterdir()) == sorted(OUTPUT_FILES)  # no temp files left
    assert (run.out / "roc_curves.png").read_bytes().startswith(b"\x89PNG")
    assert (run.out / "reliability.png").read_bytes().startswith(b"\x89PNG")


def test_metrics_json_is_strict_json(run: EvalRun) -> None:
    metrics = strict_json((run.out / "metrics.json").read_text())
    assert metrics["setup"]["data"]["synthetic"] is True
    assert metrics["summary"]["ci_method"] == f"patient-level bootstrap ({N_BOOT} replicates)"
    assert set(metrics["summary"]["per_label"]) == set(LABELS)


def test_predictions_csv_has_only_the_agreed_columns(run: EvalRun) -> None:
    predictions = read_predictions(run)
    assert list(predictions.columns) == ["image", "patient_id", "split", *LABELS]
    assert set(predictions["split"]) == {"test", "val"}
    assert predictions[list(LABELS)].stack().between(0, 1).all()


def test_per_class_auroc_equals_sklearn_on_predictions_csv(run: EvalRun) -> None:
    metrics = strict_json((run.out / "metrics.json").read_text())
    truth = load_chestxray14(run.data).table.set_index("image")
    test = read_predictions(run).query("split == 'test'")
    assert len(test) == metrics["setup"]["evaluated"]["n_images"]
    labels_of_test = truth.loc[test["image"], list(LABELS)].to_numpy()
    for column, label in enumerate(LABELS):
        reported = metrics["summary"]["per_label"][label]["auroc"]
        if 0 < labels_of_test[:, column].sum() < len(test):
            assert reported == pytest.approx(roc_auc_score(labels_of_test[:, column], test[label]), abs=1e-9)
        else:
            assert reported is None


def test_checkpoint_is_unchanged_and_the_calibrated_card_holds_val_thresholds(run: EvalRun) -> None:
    assert checkpoint_sha256(run.checkpoint) == run.sha256_before
    assert read_card(run.checkpoint).extra.get("thresholds_source") is None
    calibrated = run.out / "calibrated.safetensors"
    card = read_card(calibrated)
    assert card.extra["thresholds_source"] == "val split, Youden J"
    truth = load_chestxray14(run.data).table.set_index("image")
    val = read_predictions(run).query("split == 'val'")
    with warnings.catch_warnings():  # the tiny val split lacks positives of some labels
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        expected = choose_thresholds(truth.loc[val["image"], list(LABELS)].to_numpy(), val[list(LABELS)].to_numpy(),
                                     LABELS)
    for label in LABELS:
        youden = expected[label]["youden"]
        if youden == youden:  # defined on val
            assert card.thresholds[label] == pytest.approx(youden, abs=1e-12)
            assert card.extra["thresholds"][label]["sensitivity_90"] == pytest.approx(
                expected[label]["sensitivity_90"], abs=1e-12)
        else:
            assert card.thresholds[label] == 0.5 and card.extra["thresholds"][label]["youden"] is None
    assert load_checkpoint(calibrated).card == card


def test_metrics_and_report_name_both_checkpoints_by_sha256(run: EvalRun) -> None:
    metrics = strict_json((run.out / "metrics.json").read_text())
    calibrated = run.out / "calibrated.safetensors"
    assert metrics["setup"]["checkpoint"]["sha256"] == run.sha256_before
    assert metrics["setup"]["calibrated_checkpoint"] == {
        "path": str(calibrated), "sha256": checkpoint_sha256(calibrated), "written": True,
        "thresholds": read_card(calibrated).thresholds}
    report = (run.out / "report.md").read_text()
    assert run.sha256_before in report and checkpoint_sha256(calibrated) in report
    assert f"medres score DICOM_FOLDER --checkpoint {calibrated}" in report and "Score with this file" in report


def test_report_says_synthetic_and_shows_the_published_table(run: EvalRun) -> None:
    report = (run.out / "report.md").read_text()
    assert "SYNTHETIC DATA" in report and "comparison is meaningless" in report
    assert "CheXNet 2017" in report and "Wang 2017 (official split)" in report and "0.809" in report
    assert "(roc_curves.png)" in report and "(reliability.png)" in report
    assert "patient-level bootstrap" in report and "## Subgroups" in report


def test_no_calibrated_checkpoint_and_no_progress_and_run_split_settings(data_root: Path, tmp_path: Path,
                                                                         capsys) -> None:
    checkpoint = untrained_checkpoint(tmp_path / "run" / "best.safetensors")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"val_fraction": 0.3, "split_seed": 1}))
    sha256 = checkpoint_sha256(checkpoint)
    exit_code = main(["eval", "cxr", "--checkpoint", str(checkpoint), "--data", str(data_root), "--out",
                      str(tmp_path / "out"), "--n-boot", "10", "--no-calibrated-checkpoint", "--no-progress"])
    captured = capsys.readouterr()
    assert exit_code == 0 and checkpoint_sha256(checkpoint) == sha256
    assert "predicting" not in captured.err and "calibrated checkpoint not written" in captured.out
    assert not (tmp_path / "out" / "calibrated.safetensors").exists()
    metrics = strict_json((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["setup"]["calibrated_checkpoint"]["written"] is False
    assert metrics["setup"]["data"]["val_fraction"] == 0.3 and metrics["setup"]["data"]["split_seed"] == 1
    assert "config.json" in metrics["setup"]["data"]["split_settings_source"]
    expected_val = load_chestxray14(data_root, val_fraction=0.3, seed=1).subset(split="val").table
    assert metrics["thresholds"]["n_images"] == len(expected_val)


def test_val_split_from_a_prepared_cache_warns_that_thresholds_are_optimistic(data_root: Path, tmp_path: Path,
                                                                              run: EvalRun, capsys) -> None:
    cache = tmp_path / "cache"
    assert main(["prepare", "cxr", "--data", str(data_root), "--out", str(cache), "--workers", "1"]) == 0
    checkpoint = Path(shutil.copyfile(run.checkpoint, tmp_path / "model.safetensors"))
    exit_code = main(["eval", "cxr", "--checkpoint", str(checkpoint), "--data", str(data_root), "--split", "val",
                      "--cache", str(cache), "--out", str(tmp_path / "out"), "--n-boot", "10"])
    assert exit_code == 0 and "predicting val" in capsys.readouterr().err  # progress bars by default
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert set(predictions["split"]) == {"val"}
    assert "chosen on the evaluated split itself" in (tmp_path / "out" / "report.md").read_text()
    first_run = read_predictions(run).query("split == 'val'").set_index("image")[list(LABELS)]
    assert predictions.set_index("image")[list(LABELS)].loc[first_run.index].to_numpy() == pytest.approx(
        first_run.to_numpy(), abs=1e-6)  # the cache gives the same inputs as decoding the PNGs


def test_missing_checkpoint_is_a_one_line_error(data_root: Path, tmp_path: Path, capsys) -> None:
    exit_code = main(["eval", "cxr", "--checkpoint", str(tmp_path / "absent.safetensors"), "--data",
                      str(data_root), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_code == 2 and error.startswith("medres: error: not_found:") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_pickle_checkpoint_is_refused(data_root: Path, tmp_path: Path, capsys) -> None:
    torch.save({"weights": torch.zeros(1)}, tmp_path / "model.pt")
    exit_code = main(["eval", "cxr", "--checkpoint", str(tmp_path / "model.pt"), "--data", str(data_root),
                      "--out", str(tmp_path / "out")])
    assert exit_code == 2 and "unsafe_checkpoint" in capsys.readouterr().err


def test_evaluating_a_calibrated_checkpoint_into_its_own_folder_is_refused(run: EvalRun, capsys) -> None:
    calibrated = run.out / "calibrated.safetensors"
    sha256 = checkpoint_sha256(calibrated)
    exit_code = main(["eval", "cxr", "--checkpoint", str(calibrated), "--data", str(run.data), "--out", str(run.out),
                      "--n-boot", "10", "--no-progress"])
    assert exit_code != 0 and "would overwrite the checkpoint being evaluated" in capsys.readouterr().err
    assert checkpoint_sha256(calibrated) == sha256


@pytest.mark.parametrize("command", [["eval"], ["eval", "cxr"], ["eval", "seg"]])
def test_help(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0 and "usage" in capsys.readouterr().out


def test_a_model_with_labels_the_data_lacks_is_evaluated_on_the_shared_ones_by_name(data_root, tmp_path):
    """As an imported torchxrayvision model is: outputs in another order, one of them not a ChestX-ray14 label."""
    torch.manual_seed(0)
    labels = ("Effusion", "Lung Opacity", "Cardiomegaly")
    model = create_model("chexnet_tiny", input_size=(64, 64), labels=labels, thresholds={"Lung Opacity": 0.3})
    checkpoint = save_checkpoint(model, tmp_path / "other_labels.safetensors")
    out = tmp_path / "report"
    assert main(["eval", "cxr", "--checkpoint", str(checkpoint), "--data", str(data_root), "--split", "test",
                 "--out", str(out), "--n-boot", N_BOOT, "--no-localisation", "--no-progress"]) == 0
    metrics = strict_json((out / "metrics.json").read_text())
    assert list(metrics["summary"]["per_label"]) == ["Effusion", "Cardiomegaly"]
    assert metrics["labels_not_in_data"] == ["Lung Opacity"]
    assert "Lung Opacity have no ChestX-ray14 label" in (out / "report.md").read_text()
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions.columns) >= {"Effusion", "Cardiomegaly"} and "Lung Opacity" not in predictions
    calibrated = read_card(out / "calibrated.safetensors")
    assert calibrated.labels == labels and calibrated.thresholds["Lung Opacity"] == 0.3
