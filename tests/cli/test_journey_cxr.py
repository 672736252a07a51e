"""The chest X-ray journey through the real commands: ``train cxr`` -> ``eval cxr`` -> ``score``.

The hand-offs are what is tested: evaluation must leave the training
checkpoint's bytes alone (reports and ``scores.csv`` tables cite its SHA-256),
write a calibrated copy whose card holds the thresholds the report chose, and
``score`` with that copy must call findings at those thresholds. The model is
the session's one trained ``chexnet_tiny`` (``trained_cxr_run``); nothing is
trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medres.cli.main import main
from medres.data.chestxray14 import load_chestxray14
from medres.models import checkpoint_sha256, load_checkpoint, read_card
from medres.synthetic.dicom import SYNTHETIC_IDENTIFIERS, radiograph_from_png

N_SCORED_IMAGES = 8
CALLS_AMBIGUOUS_WITHIN = 1e-6  # scores.csv rounds probabilities to 6 decimals; calls use the unrounded ones
pytestmark = pytest.mark.filterwarnings("ignore::medres.metrics.MetricUndefinedWarning")


def evaluate(checkpoint: Path, data: Path, out: Path) -> dict:
    assert main(["eval", "cxr", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
                 "--out", str(out), "--n-boot", "20", "--no-progress"]) == 0
    return json.loads((out / "metrics.json").read_text())


def dicom_export(data: Path, folder: Path) -> Path:
    """A few test-split images as chest DX/CR DICOM files, as a PACS export would hold them."""
    table = load_chestxray14(data).table
    for number, row in enumerate(table[table["split"] == "test"].head(N_SCORED_IMAGES).itertuples()):
        radiograph_from_png(Path(row.path), folder / f"{Path(row.image).stem}.dcm", uid_seed=f"journey/{row.image}",
                            modality="CR" if number % 2 else "DX", view_position=row.view,
                            identifiers=SYNTHETIC_IDENTIFIERS)
    return folder


@pytest.fixture(scope="module")
def journey(trained_cxr_run: Path, synthetic_cxr_2k: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`eval cxr` on the trained run's best.safetensors, with the checkpoint's SHA-256 around it."""
    checkpoint = trained_cxr_run / "best.safetensors"
    sha256_before = checkpoint_sha256(checkpoint)
    out = tmp_path_factory.mktemp("journey_cxr") / "report"
    metrics = evaluate(checkpoint, synthetic_cxr_2k, out)
    return {"checkpoint": checkpoint, "sha256_before": sha256_before, "out": out, "metrics": metrics,
            "calibrated": out / "calibrated.safetensors", "data": synthetic_cxr_2k}


@pytest.mark.slow
def test_eval_leaves_the_training_checkpoint_bytes_unchanged(journey: dict) -> None:
    assert checkpoint_sha256(journey["checkpoint"]) == journey["sha256_before"]
    assert journey["metrics"]["setup"]["checkpoint"]["sha256"] == journey["sha256_before"]
    assert journey["sha256_before"] in (journey["out"] / "report.md").read_text()


@pytest.mark.slow
def test_calibrated_card_holds_the_reported_thresholds_and_the_same_weights(journey: dict) -> None:
    metrics, calibrated = journey["metrics"], journey["calibrated"]
    card, training_card = read_card(calibrated), read_card(journey["checkpoint"])
    assert metrics["setup"]["calibrated_checkpoint"]["sha256"] == checkpoint_sha256(calibrated)
    assert metrics["setup"]["calibrated_checkpoint"]["thresholds"] == card.thresholds
    chosen_somewhere = 0
    for label, rules in metrics["thresholds"]["per_label"].items():
        chosen = rules["youden"]["threshold"]
        assert card.thresholds[label] == (training_card.thresholds[label] if chosen is None else chosen)
        chosen_somewhere += chosen is not None
    assert chosen_somewhere >= 10  # 2,000 images: most labels have both classes on val
    report = (journey["out"] / "report.md").read_text()
    assert checkpoint_sha256(calibrated) in report and f"--checkpoint {calibrated}" in report
    trained, recalibrated = load_checkpoint(journey["checkpoint"]), load_checkpoint(calibrated)
    assert all(value.equal(recalibrated.state_dict()[key]) for key, value in trained.state_dict().items())


@pytest.mark.slow
def test_score_with_the_calibrated_checkpoint_calls_at_its_thresholds(journey: dict, tmp_path: Path) -> None:
    calibrated, card = journey["calibrated"], read_card(journey["calibrated"])
    export = dicom_export(journey["data"], tmp_path / "export")
    assert main(["score", str(export), "--checkpoint", str(calibrated), "--out", str(tmp_path / "scores"),
                 "--precision", "fp32", "--workers", "1", "--no-progress"]) == 0
    scores = pd.read_csv(tmp_path / "scores" / "scores.csv")
    assert len(scores) == N_SCORED_IMAGES
    assert set(scores["checkpoint_sha256"]) == {checkpoint_sha256(calibrated)}
    training_thresholds = read_card(journey["checkpoint"]).thresholds
    between_the_two_thresholds = 0
    for label, threshold in card.thresholds.items():
        probability, call = scores[f"prob_{label}"], scores[f"call_{label}"]
        clear = (probability - threshold).abs() > CALLS_AMBIGUOUS_WITHIN
        assert (call[clear] == (probability[clear] >= threshold).astype(int)).all(), label
        lower, upper = sorted((threshold, training_thresholds[label]))
        between_the_two_thresholds += int(((probability >= lower) & (probability < upper)).sum())
    assert between_the_two_thresholds > 0, "no call would differ between the two cards: the test proves nothing"


@pytest.mark.slow
def test_a_second_eval_writes_a_byte_identical_calibrated_checkpoint(journey: dict, tmp_path: Path) -> None:
    metrics = evaluate(journey["checkpoint"], journey["data"], tmp_path / "again")
    assert (tmp_path / "again" / "calibrated.safetensors").read_bytes() == journey["calibrated"].read_bytes()
    assert metrics["setup"]["calibrated_checkpoint"]["sha256"] == journey["metrics"]["setup"][
        "calibrated_checkpoint"]["sha256"]
    assert checkpoint_sha256(journey["checkpoint"]) == journey["sha256_before"]
