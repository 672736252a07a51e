"""``medres eval cxr`` localisation: Grad-CAM of the suite's trained model against the synthetic boxes.

Runs the real command on the shared ``trained_cxr_run`` / ``synthetic_cxr_2k``
fixtures (no other model is trained) and checks its pointing game against what
tests/explain/test_localisation.py measures: :func:`medres.explain.evaluate_boxes`
image by image, with that module's tolerance and centre baseline, on the same
images. The command batches (image, label) rows instead, so equal hit rates
also show that batching does not change the maps.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image as PILImage

from medres.cli.main import main
from medres.data.chestxray14 import BOX_FILE, load_chestxray14
from medres.evaluate.localisation import (
    GALLERY_NAME,
    GALLERY_SIZE,
    TABLE_NAME,
    TURNED_OFF,
    choose_gallery_rows,
    maps_on_original,
)
from medres.explain import evaluate_boxes, explain
from medres.io import read_image
from medres.models import create_model, load_checkpoint, save_checkpoint
from tests.explain.test_localisation import TOLERANCE_PER_PIXEL, centre_baseline

pytestmark = pytest.mark.filterwarnings("ignore::medres.metrics.MetricUndefinedWarning")
SECTION = "## Localisation (Grad-CAM)"
N_BOOT = "20"


def eval_cxr(checkpoint: Path, data: Path, out: Path, split: str, *options: str) -> int:
    return main(["eval", "cxr", "--checkpoint", str(checkpoint), "--data", str(data), "--split", split,
                 "--out", str(out), "--n-boot", N_BOOT, "--no-calibrated-checkpoint", "--no-progress", *options])


def boxed_setup(data: Path, split: str, checkpoint: Path) -> dict:
    """As tests/explain/test_localisation.py's ``localisation_setup``, for any split."""
    index = load_chestxray14(data)
    images_of_split = set(index.table.loc[index.table["split"] == split, "image"])
    boxes = index.boxes[index.boxes["image"].isin(images_of_split)].reset_index(drop=True)
    paths = dict(zip(index.table["image"], index.table["path"]))
    images = {name: read_image(paths[name]).array for name in boxes["image"].unique()}
    side = next(iter(images.values())).shape[-1]
    return {"model": load_checkpoint(checkpoint), "boxes": boxes, "images": images,
            "tolerance": TOLERANCE_PER_PIXEL * side}


@pytest.fixture(scope="module")
def test_split_report(trained_cxr_run: Path, synthetic_cxr_2k: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("localisation") / "report"
    assert eval_cxr(trained_cxr_run / "best.safetensors", synthetic_cxr_2k, out, "test") == 0
    return out


@pytest.fixture(scope="module")
def test_split_reference(trained_cxr_run: Path, synthetic_cxr_2k: Path) -> tuple[dict, pd.DataFrame]:
    setup = boxed_setup(synthetic_cxr_2k, "test", trained_cxr_run / "best.safetensors")
    return setup, evaluate_boxes(setup["model"], setup["images"], setup["boxes"], "gradcam", setup["tolerance"])


@pytest.mark.slow
def test_the_synthetic_test_split_has_boxed_images(synthetic_cxr_2k: Path) -> None:
    index = load_chestxray14(synthetic_cxr_2k)
    test_images = index.table.loc[index.table["split"] == "test", "image"]
    assert index.boxes["image"].isin(test_images).sum() > 50
    assert "Infiltrate" in (synthetic_cxr_2k / BOX_FILE).read_text()  # NIH's spelling, read as Infiltration


@pytest.mark.slow
def test_report_and_metrics_carry_the_localisation_with_counts(test_split_report: Path,
                                                               test_split_reference: tuple[dict, pd.DataFrame]) -> None:
    setup, _ = test_split_reference
    localisation = json.loads((test_split_report / "metrics.json").read_text())["localisation"]
    overall, per_label = localisation["overall"], localisation["per_label"]
    assert localisation["measured"] and localisation["method"] == "gradcam" and localisation["split"] == "test"
    assert overall["n_boxes"] == len(setup["boxes"]) and overall["n_images"] == setup["boxes"]["image"].nunique()
    assert sum(values["n_boxes"] for values in per_label.values()) == overall["n_boxes"]
    assert set(per_label) == set(setup["boxes"]["label"]) and "Infiltration" in per_label
    for values in [overall, *per_label.values()]:
        for field in ("pointing_game", "centre_baseline", "mean_iobb"):
            assert 0.0 <= values[field] <= 1.0
        assert -1.0 <= values["confidence_drop_cam"] <= 1.0 and -1.0 <= values["confidence_drop_random"] <= 1.0
    assert localisation["settings"]["pointing_tolerance_px"] == pytest.approx([setup["tolerance"]] * 2)
    assert localisation["settings"]["top_fraction"] == 0.2
    report = (test_split_report / "report.md").read_text()
    section = report.split(SECTION, 1)[1].split("\n## ", 1)[0]
    assert "Infiltrate" in section and "Zhang et al. 2016" in section and f"{setup['tolerance']:.1f} px" in section
    assert f"| **All** | {overall['n_boxes']} | {overall['n_images']} | {overall['pointing_game']:.3f} |" in section
    assert f"]({GALLERY_NAME})" in section and "Localisation" not in report.split(SECTION, 1)[0]


@pytest.mark.slow
def test_per_box_table_agrees_with_the_summary(test_split_report: Path) -> None:
    localisation = json.loads((test_split_report / "metrics.json").read_text())["localisation"]
    table = pd.read_csv(test_split_report / TABLE_NAME)
    assert len(table) == localisation["overall"]["n_boxes"]
    assert table["hit"].mean() == pytest.approx(localisation["overall"]["pointing_game"])
    assert table["random_drop"].mean() == pytest.approx(localisation["overall"]["confidence_drop_random"])
    for label, values in localisation["per_label"].items():
        assert table.loc[table["label"] == label, "iobb"].mean() == pytest.approx(values["mean_iobb"])


@pytest.mark.slow
def test_gallery_png_decodes(test_split_report: Path) -> None:
    content = (test_split_report / GALLERY_NAME).read_bytes()
    with PILImage.open(io.BytesIO(content)) as picture:
        picture.load()
        assert picture.format == "PNG" and picture.width >= 600 and picture.height >= 300
    assert not [path.name for path in test_split_report.iterdir() if path.name.startswith(".")]  # no temp files


@pytest.mark.slow
def test_pointing_game_equals_evaluate_boxes_on_the_same_maps(test_split_report: Path,
                                                              test_split_reference: tuple[dict, pd.DataFrame]) -> None:
    setup, reference = test_split_reference
    localisation = json.loads((test_split_report / "metrics.json").read_text())["localisation"]
    overall = localisation["overall"]
    print(f"\neval cxr: pointing game {overall['pointing_game']:.3f} over {overall['n_boxes']} boxes "
          f"(evaluate_boxes: {reference['hit'].mean():.3f}); centre baseline {overall['centre_baseline']:.3f}; "
          f"mean IoBB {overall['mean_iobb']:.3f}; confidence drop CAM {overall['confidence_drop_cam']:.3f} "
          f"vs random {overall['confidence_drop_random']:.3f}")
    assert localisation["overall"]["pointing_game"] == reference["hit"].mean()
    assert localisation["overall"]["centre_baseline"] == centre_baseline(setup)
    for label, values in localisation["per_label"].items():
        assert values["pointing_game"] == reference.loc[reference["label"] == label, "hit"].mean()
    table = pd.read_csv(test_split_report / TABLE_NAME).merge(reference, on=["image", "label"],
                                                              suffixes=("", "_reference"))
    assert len(table) == len(reference)
    assert (table["hit"] == table["hit_reference"]).all()
    np.testing.assert_allclose(table["iobb"], table["iobb_reference"], atol=1e-6)
    np.testing.assert_allclose(table["probability"], table["probability_reference"], atol=1e-5)


@pytest.mark.slow
def test_gradcam_plus_plus_on_the_val_split_equals_evaluate_boxes(trained_cxr_run: Path, synthetic_cxr_2k: Path,
                                                                  tmp_path: Path) -> None:
    checkpoint = trained_cxr_run / "best.safetensors"
    assert eval_cxr(checkpoint, synthetic_cxr_2k, tmp_path, "val", "--localisation", "--cam-method", "gradcam++") == 0
    localisation = json.loads((tmp_path / "metrics.json").read_text())["localisation"]
    setup = boxed_setup(synthetic_cxr_2k, "val", checkpoint)
    reference = evaluate_boxes(setup["model"], setup["images"], setup["boxes"], "gradcam++", setup["tolerance"])
    assert localisation["method"] == "gradcam++" and localisation["overall"]["n_boxes"] == len(reference)
    assert localisation["overall"]["pointing_game"] == reference["hit"].mean()
    assert "gradcam++ maps" in (tmp_path / "report.md").read_text()


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 120-image synthetic folder without its box file, and an untrained tiny checkpoint (nothing trained)."""
    from medres.synthetic.chestxray14 import make_chestxray14

    root = make_chestxray14(tmp_path_factory.mktemp("no_boxes") / "cxr14", 120, seed=0, image_size=64)
    (root / BOX_FILE).unlink()
    torch.manual_seed(0)
    checkpoint = save_checkpoint(create_model("chexnet_tiny", input_size=(64, 64)), root.parent / "model.safetensors")
    return root, checkpoint


@pytest.mark.slow
def test_no_localisation_writes_no_section(trained_cxr_run: Path, synthetic_cxr_2k: Path, tmp_path: Path) -> None:
    assert eval_cxr(trained_cxr_run / "best.safetensors", synthetic_cxr_2k, tmp_path, "val", "--no-localisation") == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["localisation"] == {"measured": False,
                                                                                   "reason": TURNED_OFF}
    assert "Localisation" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / GALLERY_NAME).exists() and not (tmp_path / TABLE_NAME).exists()


def test_folder_without_box_file_writes_no_section_and_says_why(small_folder: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    root, checkpoint = small_folder
    assert eval_cxr(checkpoint, root, tmp_path, "test") == 0
    report = (tmp_path / "report.md").read_text()
    assert SECTION not in report and f"not measured: the data folder has no {BOX_FILE}" in report
    assert json.loads((tmp_path / "metrics.json").read_text())["localisation"]["measured"] is False
    assert not (tmp_path / GALLERY_NAME).exists()


def test_asking_for_localisation_without_boxes_is_a_usage_error(small_folder: tuple[Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    root, checkpoint = small_folder
    assert eval_cxr(checkpoint, root, tmp_path / "out", "test", "--localisation") == 2
    assert f"--localisation cannot run: the data folder has no {BOX_FILE}" in capsys.readouterr().err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_centre_square_crop_places_the_map_on_the_kept_square() -> None:
    torch.manual_seed(0)
    model = create_model("chexnet_tiny", input_size=(64, 64))
    card = dataclasses.replace(model.card, crop="center_square")
    result = explain(model, torch.rand(1, model.card.in_channels, 64, 64), targets=["Mass"])
    placed = maps_on_original(result, 0, (90, 120), card, normalized=False)
    square = result.on_original(0, (90, 90), normalized=False)[0]
    assert placed.shape == (90, 120)
    np.testing.assert_array_equal(placed[:, 15:105], square)
    assert not placed[:, :15].any() and not placed[:, 105:].any()
    np.testing.assert_array_equal(maps_on_original(result, 0, (90, 120), model.card, normalized=False),
                                  result.on_original(0, (90, 120), normalized=False)[0])


def test_gallery_takes_one_box_per_label_first_then_the_next_ones() -> None:
    boxes = pd.DataFrame({"image": [f"{number}.png" for number in range(12)],
                          "label": ["Mass"] * 6 + ["Nodule", "Effusion"] + ["Mass"] * 4})
    assert choose_gallery_rows(boxes, GALLERY_SIZE) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert choose_gallery_rows(boxes, 3) == [0, 6, 7]
    assert choose_gallery_rows(boxes.head(2), GALLERY_SIZE) == [0, 1]
