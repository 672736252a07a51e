"""``medres score``'s path (channels-last, padded batches, decoding during start-up, the chosen precision) against
the plain eager fp32 model, on a trained checkpoint: the parity check of issue 17."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medres.cli.main import main
from medres.io import read_image
from medres.models import load_checkpoint
from medres.runtime import precision_name
from medres.transforms.cxr import preprocess_for_model
from tests.score.conftest import table_rows, write_synthetic_dicoms

TOLERANCE = {"fp32": 1e-5, "auto": 0.005}  # absolute, per probability; the scores table keeps 6 decimals
AUTO_IS_BF16 = precision_name(torch.device("cpu"), "auto") == "bfloat16"


@pytest.mark.slow
@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("auto", marks=pytest.mark.xfail(
        AUTO_IS_BF16, strict=True,
        reason="known gap: bf16 autocast, the CPU default, moves a few probabilities of the trained chexnet_tiny "
               "by more than 0.005 (when found: 5 of 294, at most 0.0135, mean 0.0004; logits by up to 0.1)")),
])
def test_scores_equal_eager_fp32_on_a_trained_checkpoint(precision, trained_cxr_run, synthetic_pngs, tmp_path):
    checkpoint = trained_cxr_run / "best.safetensors"
    paths = write_synthetic_dicoms(tmp_path / "in", synthetic_pngs, 21, special=False)
    assert main(["score", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--batch-size", "8", "--precision", precision, "--no-progress"]) == 0
    rows = {row["path"]: row for row in table_rows(tmp_path / "out", "scores")}
    model = load_checkpoint(checkpoint).float().eval()  # eager, fp32, contiguous: the plain way
    with torch.inference_mode():
        inputs = torch.stack([preprocess_for_model(read_image(path).array, model.card) for path in paths])
        expected = torch.sigmoid(model(inputs)).numpy()
    scored = np.array([[float(rows[path.relative_to(tmp_path / "in").as_posix()][f"prob_{label}"])
                        for label in model.card.labels] for path in paths])
    assert scored.shape == expected.shape == (21, len(model.card.labels))
    assert expected.std() > 0.01  # a trained model: the probabilities differ between images and labels
    assert np.abs(scored - expected).max() <= TOLERANCE[precision]
