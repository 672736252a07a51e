"""Batched classifier prediction: the card's output activation (against SciPy), precision, order, one function."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, softmax
from torch.utils.data import TensorDataset

from medres.cli.main import main
from medres.inference import output_activation, predict_batch, predict_dataset
from medres.io import read_image
from medres.models import create_model, save_checkpoint
from medres.synthetic.phantoms import PHANTOM_LABELS

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("chexnet_tiny").eval()


@pytest.mark.parametrize("name, kwargs", [("chexnet_tiny", {}), ("resnet3d_tiny", {"labels": ("a", "b", "c")})])
def test_multi_label_models_get_a_sigmoid_per_label(name, kwargs):
    logits = torch.randn(4, 3, dtype=torch.float64) * 5
    probabilities = output_activation(create_model(name, **kwargs).card)(logits)
    assert probabilities.dtype == torch.float32
    np.testing.assert_allclose(probabilities.numpy(), expit(logits.numpy()), rtol=1e-6, atol=1e-7)


def test_segmentation_models_get_a_softmax_over_the_classes():
    logits = torch.randn(2, len(PHANTOM_LABELS), 5, 4, 3) * 5
    probabilities = output_activation(create_model("resunet3d_tiny", labels=PHANTOM_LABELS).card)(logits)
    np.testing.assert_allclose(probabilities.numpy(), softmax(logits.numpy(), axis=1), rtol=1e-5, atol=1e-6)


def test_predict_batch_is_the_sigmoid_of_the_logits_in_float32(classifier):
    inputs = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        logits = classifier(inputs).double().numpy()
    probabilities = predict_batch(classifier, inputs)
    assert probabilities.shape == (3, len(classifier.card.labels)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expit(logits), rtol=1e-5, atol=1e-6)


def test_predict_batch_runs_the_model_under_the_requested_precision(classifier):
    inputs = torch.randn(2, 1, 64, 64)
    fp32 = predict_batch(classifier, inputs, "fp32")
    bf16 = predict_batch(classifier, inputs, "bf16")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # the convolutions ran in bf16
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_predict_dataset_keeps_the_order_and_evaluates_in_eval_mode(classifier):
    inputs, targets = torch.randn(10, 1, 64, 64), (torch.rand(10, 14) < 0.3).float()
    classifier.train()  # batch norm in training mode would use batch statistics
    probabilities, returned = predict_dataset(classifier, TensorDataset(inputs, targets), batch_size=4)
    assert not classifier.training
    np.testing.assert_array_equal(returned, targets.numpy())
    np.testing.assert_allclose(probabilities, predict_batch(classifier, inputs), rtol=1e-5, atol=1e-6)


def test_score_and_the_app_give_one_radiograph_the_same_probabilities(classifier, tmp_path):
    from medres.app import analysis

    checkpoint = save_checkpoint(classifier, tmp_path / "tiny.safetensors")
    (tmp_path / "in").mkdir()
    shutil.copy(SAMPLES / "cr_chest_monochrome1.dcm", tmp_path / "in" / "cr.dcm")
    assert main(["score", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--precision", "fp32", "--workers", "1", "--no-progress"]) == 0
    row = pd.read_csv(tmp_path / "out" / "scores.csv").iloc[0]
    app = analysis.score_xray(analysis.load_model(checkpoint), read_image(SAMPLES / "cr_chest_monochrome1.dcm"))
    for label, probability in app.probabilities.items():
        assert row[f"prob_{label}"] == pytest.approx(probability, abs=1e-5)
