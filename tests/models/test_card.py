"""The card's input contract: stored size, channels, mirror axes and output activation as typed, validated fields.

Old cards (the JSON medres wrote at commit 3e97a6d, before these fields were typed) load with the defaults the
card's docstring states and give the same preprocessing as before; invalid values are refused with
``invalid_model_card``; every consumer (preprocessing, datasets, TTA, the output activation, score and the app)
reads the typed field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, softmax

from medres.cli.main import main
from medres.data.chestxray14 import LABELS
from medres.data.cxr_dataset import CxrDataset, prepare_cxr_cache
from medres.errors import InvalidModelCardError, UsageError
from medres.inference import output_activation, tta_mirror_axes
from medres.io import read_image
from medres.models import create_model, read_card, save_checkpoint
from medres.models.card import ModelCard
from medres.score.tasks import CxrTask
from medres.transforms.cxr import CxrInputTransform, preprocess_for_model, to_stored

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"
NON_SQUARE_RADIOGRAPH = SAMPLES / "cr_chest_monochrome1.dcm"  # 384 x 320

# Cards exactly as medres wrote them at commit 3e97a6d (ModelCard.to_json of that version).
OLD_TRAINED_CXR_CARD = (
    '{"architecture_revision": 2, "extra": {"split_method": "patient", "stored_size": 128}, "gradcam_layer": '
    '"layer4", "in_channels": 1, "input_size": [128, 128], "labels": ["Atelectasis", "Cardiomegaly", "Effusion", '
    '"Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", '
    '"Fibrosis", "Pleural_Thickening", "Hernia"], "medres_version": "0.1.0", "name": "chexnet_tiny", '
    '"normalization": {"kind": "imagenet_gray", "mean": 0.449, "std": 0.226}, "spacing": null, "spatial_dims": 2, '
    '"task": "cxr", "thresholds": {"Atelectasis": 0.5, "Cardiomegaly": 0.5, "Consolidation": 0.5, "Edema": 0.5, '
    '"Effusion": 0.5, "Emphysema": 0.5, "Fibrosis": 0.5, "Hernia": 0.5, "Infiltration": 0.5, "Mass": 0.5, '
    '"Nodule": 0.5, "Pleural_Thickening": 0.5, "Pneumonia": 0.5, "Pneumothorax": 0.5}, '
    '"training_data_fingerprint": "0123456789abcdef"}'
)
OLD_SEG_CARD = (
    '{"architecture_revision": 1, "extra": {"channel_names": ["CT"], "mirror_axes": [0, 2], "modality": "CT"}, '
    '"gradcam_layer": "", "in_channels": 1, "input_size": [48, 48, 32], "labels": ["background", "liver", '
    '"spleen"], "medres_version": "0.1.0", "name": "resunet3d_tiny", "normalization": {"channels": [{"kind": '
    '"zscore_per_image"}], "kind": "per_channel"}, "spacing": [1.5, 1.5, 1.5], "spatial_dims": 3, "task": "seg", '
    '"thresholds": {"background": 0.5, "liver": 0.5, "spleen": 0.5}, "training_data_fingerprint": ""}'
)


def old_card(text: str, *, drop_extra: tuple[str, ...] = (), **changes) -> ModelCard:
    """An old card's JSON, optionally without some of its ``extra`` entries or with other values."""
    data = json.loads(text)
    data["extra"] = {key: value for key, value in data["extra"].items() if key not in drop_extra}
    return ModelCard.from_json(json.dumps({**data, **changes}))


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    return read_image(NON_SQUARE_RADIOGRAPH).array


# --- old cards load with the stated defaults -------------------------------------------------------------------


def test_an_old_cxr_card_reads_its_stored_size_from_extra_and_keeps_the_rest_of_extra():
    card = ModelCard.from_json(OLD_TRAINED_CXR_CARD)
    assert card.stored_size == 128 and card.extra == {"split_method": "patient"}
    assert card.mirror_axes == () and card.output_activation == "sigmoid" and card.crop == "none"
    assert json.loads(card.to_json())["stored_size"] == 128  # written as the typed field from now on


def test_an_old_card_without_a_stored_size_gets_the_old_fallback():
    assert old_card(OLD_TRAINED_CXR_CARD, drop_extra=("stored_size",)).stored_size == 256  # max(256, 128)
    assert old_card(OLD_TRAINED_CXR_CARD, drop_extra=("stored_size",), input_size=[320, 320]).stored_size == 320


@pytest.mark.parametrize("drop", [(), ("stored_size",)])
def test_an_old_cxr_card_gives_the_same_preprocessing_as_before(radiograph, drop):
    data = json.loads(OLD_TRAINED_CXR_CARD)
    card = old_card(OLD_TRAINED_CXR_CARD, drop_extra=drop)
    # What preprocess_for_model computed at 3e97a6d: extra["stored_size"], else max(256, *input_size); no crop.
    old_stored_size = 256 if drop else data["extra"]["stored_size"]
    before = CxrInputTransform(card)(to_stored(radiograph, old_stored_size))
    after = preprocess_for_model(radiograph, card)
    assert after.shape == (1, 128, 128)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_an_old_seg_card_reads_its_mirror_axes_from_extra():
    card = ModelCard.from_json(OLD_SEG_CARD)
    assert card.mirror_axes == (0, 2) and "mirror_axes" not in card.extra and card.extra["modality"] == "CT"
    assert card.output_activation == "softmax" and card.stored_size is None
    assert tta_mirror_axes(card, []) == (0, 2)


def test_an_old_volume_card_without_mirror_axes_mirrors_all_three_as_its_training_did():
    card = old_card(OLD_SEG_CARD, drop_extra=("mirror_axes",))
    assert card.mirror_axes == (0, 1, 2) and tta_mirror_axes(card, []) == (0, 1, 2)
    classifier = old_card(OLD_SEG_CARD, drop_extra=("mirror_axes",), name="resnet3d_tiny", task="vol",
                          labels=["abnormal"], thresholds={})
    assert classifier.output_activation == "sigmoid" and classifier.mirror_axes == (0, 1, 2)


def test_a_card_from_a_newer_medres_keeps_its_unknown_fields_in_extra():
    data = {**json.loads(create_model("chexnet_tiny").card.to_json()), "future_field": {"x": 1}}
    card = ModelCard.from_json(json.dumps(data))
    assert card.extra == {"future_field": {"x": 1}} and card.stored_size == 256


def test_registry_cards_state_every_field():
    cxr, seg = create_model("chexnet_tiny").card, create_model("resunet3d_tiny").card
    assert (cxr.stored_size, cxr.mirror_axes, cxr.output_activation) == (256, (), "sigmoid")
    assert (seg.stored_size, seg.mirror_axes, seg.output_activation) == (None, (0, 1, 2), "softmax")
    for card in (cxr, seg):
        assert {"stored_size", "mirror_axes", "output_activation"} <= json.loads(card.to_json()).keys()


# --- overrides and round trips ---------------------------------------------------------------------------------


def test_a_new_input_size_derives_the_stored_size_again_unless_one_is_given():
    assert create_model("chexnet_tiny", input_size=(320, 320)).card.stored_size == 320
    assert create_model("chexnet_tiny", input_size=(320, 320), stored_size=400).card.stored_size == 400
    card = create_model("chexnet_tiny", stored_size=300).card
    assert card.with_overrides(labels=("Mass",)).stored_size == 300


def test_a_legacy_extra_override_sets_the_typed_field():
    card = create_model("resunet3d_tiny", extra={"mirror_axes": [1], "modality": "MR"}).card
    assert card.mirror_axes == (1,) and card.extra == {"modality": "MR"}
    assert create_model("chexnet_tiny", extra={"stored_size": 192}).card.stored_size == 192


def test_save_checkpoint_and_read_card_keep_the_typed_fields(tmp_path):
    cxr = create_model("chexnet_tiny", stored_size=160, in_channels=3, crop="center_square")
    seg = create_model("resunet3d_tiny", labels=("background", "liver"), mirror_axes=(2, 0))
    for number, model in enumerate((cxr, seg)):
        card = read_card(save_checkpoint(model, tmp_path / f"{number}.safetensors"))
        assert card == model.card
    assert read_card(tmp_path / "0.safetensors").stored_size == 160
    assert read_card(tmp_path / "1.safetensors").mirror_axes == (2, 0)


# --- invalid values are refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"stored_size": 0}, "stored_size must be a positive integer"),
    ({"stored_size": "256"}, "stored_size must be a positive integer"),
    ({"stored_size": True}, "stored_size must be a positive integer"),
    ({"stored_size": 127.5}, "stored_size must be a positive integer"),
    ({"mirror_axes": [2]}, "spatial axes below 2"),
    ({"mirror_axes": [1, 1]}, "must not repeat"),
    ({"mirror_axes": [-1]}, "non-negative integers"),
    ({"mirror_axes": "01"}, "must be a list"),
    ({"output_activation": "relu"}, "output_activation 'relu' is not one of sigmoid, softmax"),
    ({"output_activation": "softmax", "labels": ["Mass"], "thresholds": {}}, "softmax output needs at least two"),
])
def test_invalid_cxr_card_values_are_refused(changes, message):
    with pytest.raises(InvalidModelCardError, match=message) as caught:
        old_card(OLD_TRAINED_CXR_CARD, drop_extra=("stored_size",), **changes)
    assert caught.value.reason == "invalid_model_card"


def test_a_field_and_its_legacy_extra_entry_must_agree():
    with pytest.raises(InvalidModelCardError, match="stored_size is 200 but extra\\['stored_size'\\] says 128"):
        old_card(OLD_TRAINED_CXR_CARD, stored_size=200)
    assert old_card(OLD_TRAINED_CXR_CARD, stored_size=128).stored_size == 128


@pytest.mark.parametrize("changes, message", [
    ({"stored_size": 256}, "stored_size applies to radiographs only"),
    ({"mirror_axes": [0, 3]}, "spatial axes below 3"),
    ({"mirror_axes": [True]}, "non-negative integers"),
])
def test_invalid_volume_card_values_are_refused(changes, message):
    data = json.loads(OLD_SEG_CARD)
    data["extra"].pop("mirror_axes")
    with pytest.raises(InvalidModelCardError, match=message) as caught:
        ModelCard.from_json(json.dumps({**data, **changes}))
    assert caught.value.reason == "invalid_model_card"


def test_the_output_activation_is_not_an_override():
    with pytest.raises(UsageError, match="cannot override output_activation"):
        create_model("chexnet_tiny", output_activation="softmax")


# --- consumers read the typed fields ---------------------------------------------------------------------------


def test_the_output_activation_is_the_one_the_card_names():
    logits = torch.randn(3, 14, dtype=torch.float64) * 4
    stated = old_card(OLD_TRAINED_CXR_CARD, output_activation="softmax")
    np.testing.assert_allclose(output_activation(stated)(logits).numpy(), softmax(logits.numpy(), axis=1),
                               rtol=1e-5, atol=1e-6)
    default = ModelCard.from_json(OLD_TRAINED_CXR_CARD)
    np.testing.assert_allclose(output_activation(default)(logits).numpy(), expit(logits.numpy()),
                               rtol=1e-5, atol=1e-6)


def test_preprocess_for_model_repeats_the_gray_channel_for_a_three_channel_card(radiograph):
    gray = create_model("chexnet_tiny").card
    model = create_model("chexnet_tiny", in_channels=3).eval()
    inputs = preprocess_for_model(radiograph, model.card)
    assert inputs.shape == (3, 128, 128) and inputs.is_contiguous()
    for channel in inputs:
        torch.testing.assert_close(channel[None], preprocess_for_model(radiograph, gray), rtol=0, atol=0)
    with torch.no_grad():
        assert model(inputs[None]).shape == (1, 14)


def test_training_inputs_have_the_cards_channels_with_one_flip_for_all(radiograph):
    from medres.transforms.cxr import Augmentation

    card = create_model("chexnet_tiny", in_channels=3).card
    transform = CxrInputTransform(card, Augmentation(flip_probability=1.0), seed=3)
    inputs = transform(to_stored(radiograph, card.stored_size), index=5)
    assert inputs.shape == (3, 128, 128)
    assert torch.equal(inputs[0], inputs[1]) and torch.equal(inputs[0], inputs[2])


def one_image_table(path: Path) -> pd.DataFrame:
    return pd.DataFrame({"image": [path.name], "path": [str(path)], **{label: [0.0] for label in LABELS}})


def test_the_dataset_stores_files_with_the_cards_size_and_crop(radiograph):
    card = create_model("chexnet_tiny", crop="center_square", stored_size=160).card
    dataset = CxrDataset(one_image_table(NON_SQUARE_RADIOGRAPH), CxrInputTransform(card))
    assert dataset.stored(0).shape == (160, 160)
    torch.testing.assert_close(dataset[0][0], preprocess_for_model(radiograph, card), rtol=0, atol=0)


def test_a_cache_cropped_otherwise_than_the_card_is_refused(tmp_path, radiograph):
    table = one_image_table(NON_SQUARE_RADIOGRAPH)
    card = create_model("chexnet_tiny", crop="center_square", stored_size=160).card
    whole = prepare_cxr_cache(table, tmp_path / "whole", size=160, workers=1, progress=False)
    with pytest.raises(UsageError, match="cropped 'none' but the model's card says crop 'center_square'"):
        CxrDataset(table, CxrInputTransform(card), whole)
    cropped = prepare_cxr_cache(table, tmp_path / "cropped", size=160, workers=1, progress=False,
                                crop="center_square")
    from_cache = CxrDataset(table, CxrInputTransform(card), cropped)
    torch.testing.assert_close(from_cache[0][0], preprocess_for_model(radiograph, card), rtol=0, atol=0)


def test_the_app_and_score_build_the_same_input_and_probabilities(tmp_path):
    """A 3-channel, centre-cropped card on a non-square radiograph: one input, one set of probabilities."""
    from medres.app import analysis

    torch.manual_seed(0)
    model = create_model("chexnet_tiny", in_channels=3, crop="center_square", stored_size=160).eval()
    image = read_image(NON_SQUARE_RADIOGRAPH)
    app_input = analysis.model_input(image, model.card)
    assert app_input.shape == (1, 3, 128, 128)
    torch.testing.assert_close(app_input[0], torch.from_numpy(CxrTask().prepare(image, model.card)), rtol=0, atol=0)

    checkpoint = save_checkpoint(model, tmp_path / "rgb.safetensors")
    (tmp_path / "in").mkdir()
    shutil.copy(NON_SQUARE_RADIOGRAPH, tmp_path / "in" / "cr.dcm")
    assert main(["score", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"),
                 "--precision", "fp32", "--workers", "1", "--no-progress"]) == 0
    row = pd.read_csv(tmp_path / "out" / "scores.csv").iloc[0]
    app = analysis.score_xray(analysis.load_model(checkpoint), image)
    for label, probability in app.probabilities.items():
        assert row[f"prob_{label}"] == pytest.approx(probability, abs=1e-5)
