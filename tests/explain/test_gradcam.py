"""Grad-CAM / Grad-CAM++ on untrained models: every architecture, batches, geometry, scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medres.errors import UnknownLabelError, UsageError
from medres.explain import explain, map_to_original, reference_scale
from medres.models import create_model, list_models
from medres.transforms.cxr import preprocess_for_model

SMALL_INPUT = 64


def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, input_size=(SMALL_INPUT, SMALL_INPUT))


def random_inputs(batch: int, size: int = SMALL_INPUT, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list_models(task="cxr"))
def test_every_registered_classifier_explains_without_in_place_errors(name: str) -> None:
    """DenseNet's and the ResNets' in-place ReLUs must not disturb the stored activation."""
    model = small_model(name).train()
    for method in ("gradcam", "gradcam++"):
        result = explain(model, random_inputs(2), targets=[0, 5], method=method)
        assert result.maps.shape == (2, 1, SMALL_INPUT, SMALL_INPUT)
        assert result.normalized.shape == result.maps.shape
        assert torch.isfinite(result.maps).all() and (result.maps >= 0).all()
        assert 0.0 <= float(result.normalized.min()) and float(result.normalized.max()) <= 1.0
    assert model.training, "explain must restore the model's mode"
    layer = model.get_submodule(model.card.gradcam_layer)
    assert not layer._forward_hooks, "explain must remove its hook"


@pytest.mark.parametrize("name", ["chexnet_tiny", "chexnet_densenet121"])
def test_batch_gives_the_same_maps_as_single_images(name: str) -> None:
    model = small_model(name)
    inputs = random_inputs(3, seed=1)
    targets = [[2, 7], [0, 1], [13, 4]]
    batch = explain(model, inputs, targets=targets, method="gradcam++")
    for index in range(3):
        alone = explain(model, inputs[index:index + 1], targets=[targets[index]], method="gradcam++")
        peak = float(alone.maps.abs().max()) + 1e-12
        assert torch.allclose(batch.maps[index], alone.maps[0], atol=1e-4 * peak, rtol=1e-4)
        assert torch.allclose(batch.normalized[index], alone.normalized[0], atol=1e-4)
        assert batch.target_names(index) == alone.target_names(0)


def test_each_image_is_explained_for_its_own_class() -> None:
    model = small_model("chexnet_tiny")
    inputs = random_inputs(2, seed=2)
    mixed = explain(model, inputs, targets=["Effusion", "Nodule"])
    assert mixed.target_names(0) == ["Effusion"] and mixed.target_names(1) == ["Nodule"]
    nodule_only = explain(model, inputs, targets=["Nodule", "Nodule"])
    assert torch.allclose(mixed.maps[1], nodule_only.maps[1], atol=1e-6)


def test_default_explains_every_label() -> None:
    model = small_model("chexnet_tiny")
    result = explain(model, random_inputs(2))
    assert result.targets.shape == (2, len(model.card.labels))
    assert result.target_names(1) == list(model.card.labels)


def test_normalised_peak_is_the_class_probability_not_min_max() -> None:
    model = small_model("chexnet_tiny")
    result = explain(model, random_inputs(2, seed=3))
    chosen = result.probabilities.gather(1, result.targets)
    peaks = result.normalized.flatten(2).amax(dim=2)
    has_evidence = result.feature_maps.flatten(2).amax(dim=2) > 0
    assert torch.allclose(peaks[has_evidence], chosen[has_evidence], atol=1e-5)
    assert (peaks[~has_evidence] == 0).all()
    assert float(peaks.max()) < 1.0, "an untrained model's maps must not be stretched to full brightness"


def test_reference_scale_is_fixed_across_images() -> None:
    model = small_model("chexnet_tiny")
    inputs = random_inputs(4, seed=4)
    calibration = explain(model, inputs)
    reference = reference_scale(calibration)
    result = explain(model, inputs, scale="reference", reference=reference)
    assert torch.allclose(result.normalized, (result.maps / reference).clamp(0, 1))


def test_maps_are_mapped_back_onto_the_original_geometry() -> None:
    """A bright spot in a non-square original must come back to the same place, though preprocessing
    squeezed the image to a square twice (original -> stored -> input)."""
    rows, cols, spot_row, spot_col = 300, 180, 210, 45
    original = np.zeros((1, rows, cols), np.float32)
    original[0, spot_row - 6:spot_row + 7, spot_col - 6:spot_col + 7] = 1.0
    card = small_model("chexnet_tiny").card
    as_input = preprocess_for_model(original, card)
    back = map_to_original(as_input[0], (rows, cols)).numpy()
    peak_row, peak_col = np.unravel_index(np.argmax(back), back.shape)
    assert back.shape == (rows, cols)
    assert abs(peak_row - spot_row) <= 3 and abs(peak_col - spot_col) <= 3


def test_on_original_matches_the_input_resolution_maps() -> None:
    model = small_model("chexnet_tiny")
    result = explain(model, random_inputs(1, seed=5), targets=[3])
    same_size = result.on_original(0, (SMALL_INPUT, SMALL_INPUT), normalized=False)
    assert np.allclose(same_size, result.maps[0].numpy(), atol=1e-6)
    shown = result.on_original(0, (90, 70))
    assert shown.shape == (1, 90, 70) and shown.max() <= 1.0


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"method": "saliency"}, UsageError, "gradcam"),
    ({"scale": "minmax"}, UsageError, "probability"),
    ({"scale": "reference"}, UsageError, "reference"),
    ({"targets": ["NotALabel"]}, UnknownLabelError, "Effusion"),
    ({"targets": [0, 1, 2]}, UsageError, "one class"),
    ({"targets": [99]}, UsageError, "outside"),
])
def test_bad_options_are_refused(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        explain(small_model("chexnet_tiny"), random_inputs(1), **options)
