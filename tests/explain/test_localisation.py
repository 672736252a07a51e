"""Grad-CAM of a briefly trained chexnet_tiny against the synthetic data set's lesion boxes.

Uses the suite's shared ``trained_cxr_run`` (chexnet_tiny, 12 epochs on 2,000
synthetic 128-pixel radiographs, tests/conftest.py). Boxes are those of the
held-out test split, in ``BBox_List_2017.csv`` format, so maps are measured on
each PNG's own pixel grid after mapping back from the model's input.

The pointing-game tolerance is Zhang et al.'s 15 pixels per 224 of image
side (8.6 pixels here). The target hit rate is over *every* boxed positive
of the test split, whether or not the model calls it positive, so a finding
the model half-misses still has to be where its map points. chexnet_tiny's
16 x 16 Grad-CAM grid (output stride 8, see its factory) is what makes that
reachable: on a 4 x 4 grid a map's peak can only sit every 32 pixels, wider
than a nodule's window. A map that always points at the image centre (about
0.24 here) is the baseline the maps must beat by 0.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medres.data.chestxray14 import load_chestxray14
from medres.explain import explain
from medres.explain.quality import confidence_drop, evaluate_boxes, pointing_game, random_regions
from medres.io import read_image
from medres.models import load_checkpoint
from medres.transforms.cxr import preprocess_for_model

TOLERANCE_PER_PIXEL = 15 / 224
TARGET_HIT_RATE = 0.8


@pytest.fixture(scope="module")
def localisation_setup(trained_cxr_run: Path, synthetic_cxr_2k: Path) -> dict:
    index = load_chestxray14(synthetic_cxr_2k)
    test_images = set(index.table.loc[index.table["split"] == "test", "image"])
    boxes = index.boxes[index.boxes["image"].isin(test_images)].reset_index(drop=True)
    paths = dict(zip(index.table["image"], index.table["path"]))
    images = {name: read_image(paths[name]).array for name in boxes["image"].unique()}
    side = next(iter(images.values())).shape[-1]
    model = load_checkpoint(trained_cxr_run / "best.safetensors")
    return {"model": model, "boxes": boxes, "images": images, "tolerance": TOLERANCE_PER_PIXEL * side}


@pytest.fixture(scope="module")
def pointing_results(localisation_setup: dict) -> dict[str, pd.DataFrame]:
    setup = localisation_setup
    return {method: evaluate_boxes(setup["model"], setup["images"], setup["boxes"], method, setup["tolerance"])
            for method in ("gradcam", "gradcam++")}


def centre_baseline(setup: dict) -> float:
    """Hit rate of a map that always points at the image centre."""
    side = next(iter(setup["images"].values())).shape[-1]
    centre = np.zeros((side, side))
    centre[side // 2, side // 2] = 1.0
    return float(np.mean([pointing_game(centre, (box.x, box.y, box.w, box.h), setup["tolerance"])
                          for box in setup["boxes"].itertuples()]))


@pytest.mark.slow
def test_pointing_game_beats_the_centre_baseline(localisation_setup: dict, pointing_results: dict) -> None:
    baseline = centre_baseline(localisation_setup)
    for method, results in pointing_results.items():
        detected = results[results["probability"] >= 0.5]
        print(f"\n{method}: pointing-game hit rate {results['hit'].mean():.3f} over {len(results)} positive "
              f"findings (tolerance {localisation_setup['tolerance']:.1f} px; centre baseline {baseline:.3f}); "
              f"{detected['hit'].mean():.3f} over the {len(detected)} the model calls positive; "
              f"mean IoBB (top 20 %) {results['iobb'].mean():.3f}")
        print("  per label: " + ", ".join(f"{label} {rate:.2f}"
                                          for label, rate in results.groupby("label")["hit"].mean().items()))
    best = max(results["hit"].mean() for results in pointing_results.values())
    assert best >= baseline + 0.1
    detected = pointing_results["gradcam"][pointing_results["gradcam"]["probability"] >= 0.5]
    assert detected["hit"].mean() >= 0.6, "where the model finds the lesion, Grad-CAM should point at it"


@pytest.mark.slow
def test_pointing_game_reaches_the_target(pointing_results: dict) -> None:
    assert pointing_results["gradcam"]["hit"].mean() >= TARGET_HIT_RATE


@pytest.mark.slow
def test_masking_the_cam_region_costs_more_confidence_than_a_random_region(localisation_setup: dict) -> None:
    setup = localisation_setup
    model, boxes = setup["model"], setup["boxes"].drop_duplicates("image").head(60)
    inputs = torch.stack([preprocess_for_model(setup["images"][name], model.card) for name in boxes["image"]])
    result = explain(model, inputs, targets=list(boxes["label"]))
    cam_drop = confidence_drop(model, inputs, result.maps, result.targets)
    random_drop = confidence_drop(model, inputs, result.maps, result.targets,
                                  regions=random_regions(result.maps.shape, seed=1))
    print(f"\nconfidence drop, top-20 % Grad-CAM region masked: {cam_drop.mean():.3f}; "
          f"random 20 % region: {random_drop.mean():.3f}")
    assert float(cam_drop.mean()) > float(random_drop.mean())
