"""Grad-CAM with a torchxrayvision model imported by ``medres import-weights``: maps on the original radiograph.

Such a model saw only the radiograph's largest centred square (its card's ``crop="center_square"``), so
its maps must land on that square of the original grid, and nowhere else: the app, ``eval cxr
--localisation`` and the box measures all place them through ``CamResult.on_original``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image as PILImage

from medres.app.analysis import explain_xray, load_model
from medres.cli.main import main
from medres.explain import evaluate_boxes, explain, map_to_original, region_seen_by_model
from medres.io import read_image
from medres.models import load_checkpoint
from medres.models.pretrained import PUBLISHED_MODELS
from medres.transforms.cxr import center_square_box, preprocess_for_model
from tests.models.pretrained_recipe import nih_checkpoint
from tests.models.test_pretrained import DATA, NIH

RADIOGRAPH = DATA / "chest_rg1_8bit.png"  # 603 rows x 640 columns: the kept square is columns 19..621
ROWS, COLS, LEFT = 603, 640, 19
LABEL = "Nodule"  # with the recipe weights, its map is non-zero over the whole feature grid


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return nih_checkpoint(tmp_path_factory.mktemp("nih"))


@pytest.fixture(scope="module")
def imported(checkpoint):
    model = load_checkpoint(checkpoint)
    array = read_image(RADIOGRAPH).array
    inputs = preprocess_for_model(array, model.card)[None]
    return model, array, inputs, explain(model, inputs, targets=[LABEL])


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.corrcoef(first.ravel(), second.ravel())[0, 1])


def test_the_kept_region_is_torchxrayvisions_centre_crop():
    assert region_seen_by_model((ROWS, COLS), "center_square") == (0, LEFT, ROWS, ROWS)
    assert center_square_box(ROWS, COLS) == (0, LEFT, ROWS)
    assert region_seen_by_model((ROWS, COLS), "none") == (0, 0, ROWS, COLS)
    assert region_seen_by_model((640, 603), "center_square") == (LEFT, 0, 603, 603)


def test_undoing_the_crop_puts_the_models_input_back_on_the_radiograph(imported):
    """The preprocessed radiograph itself, taken back as a map, matches the original where the model looked;
    spreading it over the whole width (no crop undone) is visibly worse."""
    _, array, inputs, _ = imported
    back = map_to_original(inputs[0, 0], (ROWS, COLS), crop="center_square").numpy()
    squeezed = map_to_original(inputs[0, 0], (ROWS, COLS), crop="none").numpy()
    kept = (slice(None), slice(LEFT, LEFT + ROWS))
    assert back.shape == (ROWS, COLS) and not back[:, :LEFT].any() and not back[:, LEFT + ROWS:].any()
    assert correlation(back[kept], array[0][kept]) > 0.99  # observed 0.9988
    assert correlation(squeezed[kept], array[0][kept]) < 0.96  # observed 0.94


def test_grad_cam_of_the_imported_model_lies_on_the_centre_square(imported):
    model, _, _, result = imported
    assert model.card.crop == "center_square" and result.crop == "center_square"
    cam = result.on_original(0, (ROWS, COLS), normalized=False)[0]
    assert cam.shape == (ROWS, COLS)
    assert not cam[:, :LEFT].any() and not cam[:, LEFT + ROWS:].any()  # the model never saw these columns
    assert (cam[:, LEFT:LEFT + ROWS] > 0).mean() > 0.9
    square = result.on_original(0, (ROWS, ROWS), normalized=False, crop="none")[0]
    np.testing.assert_array_equal(cam[:, LEFT:LEFT + ROWS], square)


def test_the_peak_lands_where_the_input_grids_peak_lies_on_the_original(imported):
    _, _, inputs, result = imported
    size = inputs.shape[-1]
    on_input = result.maps[0, 0].numpy()
    cam = result.on_original(0, (ROWS, COLS), normalized=False)[0]
    input_row, input_col = np.unravel_index(np.argmax(on_input), on_input.shape)
    row, col = np.unravel_index(np.argmax(cam), cam.shape)
    scale = ROWS / size
    assert abs(row - (input_row + 0.5) * scale) <= 2 * scale
    assert abs(col - (LEFT + (input_col + 0.5) * scale)) <= 2 * scale
    resampled = torch.nn.functional.interpolate(torch.from_numpy(cam[None, None, :, LEFT:LEFT + ROWS]),
                                                size=(size, size), mode="bilinear", antialias=True)[0, 0]
    assert float((resampled - result.maps[0, 0]).abs().max() / result.maps[0, 0].max()) < 0.05


def test_the_app_and_the_box_measures_place_the_map_the_same_way(checkpoint, imported):
    model, array, _, result = imported
    loaded = load_model(checkpoint)
    image = read_image(RADIOGRAPH)
    shown = explain_xray(loaded, image, LABEL)
    np.testing.assert_allclose(shown, result.on_original(0, (ROWS, COLS))[0], atol=1e-6)
    small = explain_xray(loaded, image, LABEL, shape=(301, 320))  # the size the app displays it at
    top, left, side = center_square_box(301, 320)
    assert not small[:, :left].any() and not small[:, left + side:].any() and small[:, left:left + side].any()
    outside = pd.DataFrame([{"image": "chest", "label": LABEL, "x": 0, "y": 100, "w": LEFT, "h": 200}])
    measured = evaluate_boxes(model, {"chest": array}, outside, tolerance=0.0)
    assert not measured["hit"].iloc[0] and measured["iobb"].iloc[0] == 0.0  # no evidence where it never looked


def test_score_heatmaps_of_the_imported_model_say_they_cover_the_centre_square(checkpoint, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "chest.png").write_bytes(RADIOGRAPH.read_bytes())
    assert main(["score", str(export), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--heatmaps", "--precision", "fp32", "--workers", "1", "--no-progress"]) == 0
    row = pd.read_csv(tmp_path / "out" / "scores.csv").iloc[0]
    positives = [label for label in PUBLISHED_MODELS[NIH].labels if row[f"call_{label}"]]
    written = sorted((tmp_path / "out" / "heatmaps").rglob("*.png"))
    assert positives and len(written) == len(positives)
    with PILImage.open(written[0]) as heatmap:
        assert heatmap.size == (224, 224) and heatmap.text["Crop"] == "center_square"
