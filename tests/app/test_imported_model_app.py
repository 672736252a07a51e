"""The review app with a torchxrayvision model imported by ``medres import-weights`` (streamlit's AppTest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.ipc
import pytest
import torch

from medres.app import views
from medres.models.pretrained import PUBLISHED_MODELS
from tests.app.conftest import APP_SCRIPT, APP_TIMEOUT_S, open_by_browsing
from tests.models.pretrained_recipe import nih_checkpoint
from tests.models.test_pretrained import DATA, NIH, read_reference


@pytest.fixture()
def app_with_the_nih_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app on a root holding the real radiograph, with the imported NIH recipe model as its checkpoint."""
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "root"
    root.mkdir()
    (root / "chest.png").write_bytes((DATA / "chest_rg1_8bit.png").read_bytes())
    monkeypatch.setenv("MEDRES_APP_ROOT", str(root))
    monkeypatch.setenv("MEDRES_APP_CHECKPOINT", str(nih_checkpoint(tmp_path / "checkpoint")))
    return AppTest.from_file(str(APP_SCRIPT), default_timeout=APP_TIMEOUT_S)


def test_the_app_shows_the_imported_models_14_probabilities_and_its_map(app_with_the_nih_model) -> None:
    app = open_by_browsing(app_with_the_nih_model, "chest.png")
    assert not app.exception and not app.error
    published = PUBLISHED_MODELS[NIH]
    scores = app.session_state["computed"][("scores",)]
    assert list(scores.probabilities) == list(published.labels) and len(scores.probabilities) == 14
    assert scores.thresholds == pytest.approx(published.thresholds)  # torchxrayvision's operating points
    logits = read_reference(f"torchxrayvision_{NIH}.safetensors")[0]["logits"][0, :14]
    expected = torch.sigmoid(logits).numpy()
    assert np.abs(np.array(list(scores.probabilities.values())) - expected).max() <= 0.02

    chart = app.get("vega_lite_chart")[0].proto
    shown = pyarrow.ipc.open_stream(chart.datasets[0].data.data).read_pandas()  # the bars the reader sees
    findings = {views.finding_name(label): label for label in published.labels}
    assert sorted(shown["finding"]) == sorted(findings) and len(shown) == 14
    for row in shown.itertuples():
        assert row.probability == pytest.approx(scores.probabilities[findings[row.finding]])
        assert row.threshold == pytest.approx(published.thresholds[findings[row.finding]])
    calls = next(markdown.value for markdown in app.markdown if markdown.value.startswith("Positive calls"))
    for label, probability in scores.probabilities.items():
        assert (f"{views.finding_name(label)} {probability:.2f} " in calls) == (probability >= scores.thresholds[label])
    assert len(app.selectbox(key="cam_class").options) == 14
    assert len(app.image) == 1, "the Grad-CAM overlay is shown"
    card = json.loads(app.json[0].value)
    assert card["labels"] == list(published.labels) and card["name"] == "chexnet_densenet121"
