"""The model registry, every registered classifier, and the model card."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from medres.errors import InvalidModelCardError, UnknownModelError, UsageError
from medres.models import (
    CXR14_LABELS,
    DEFAULT_CXR_MODEL,
    ModelCard,
    create_model,
    list_models,
    register_model,
    registry,
)

EXPECTED_CXR_MODELS = {
    "chexnet_densenet121", "chexnet_resnet50", "chexnet_resnet101", "chexnet_resnet152",
    "chexnet_wide_resnet50", "chexnet_preact_resnet50", "chexnet_tiny",
}
# A reduced input all architectures accept (their full sizes are slow on CPU).
REDUCED_INPUT = (1, 1, 64, 64)


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def imagenet_parameter_count(model: nn.Module) -> int:
    """The count with a 3-channel stem and a 1000-class head, to compare with torchvision."""
    stem_weights_per_channel = model.conv1.weight[:, :1].numel()
    head_parameters_per_class = model.fc.in_features + 1
    return (
        parameter_count(model)
        + (3 - model.conv1.in_channels) * stem_weights_per_channel
        + (1000 - model.fc.out_features) * head_parameters_per_class
    )


def last_linear_layer(model: nn.Module) -> nn.Linear:
    return [module for module in model.modules() if isinstance(module, nn.Linear)][-1]


def test_list_models_finds_every_cxr_classifier():
    assert set(list_models("cxr")) == EXPECTED_CXR_MODELS
    assert set(list_models()) >= EXPECTED_CXR_MODELS
    assert list_models() == sorted(list_models())
    assert not EXPECTED_CXR_MODELS & set(list_models("seg"))
    assert DEFAULT_CXR_MODEL == "chexnet_resnet50"


@pytest.mark.parametrize("name", list_models("cxr"))
def test_every_model_runs_has_a_card_and_a_hookable_gradcam_layer(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    card = model.card
    assert (card.name, card.task, card.labels, card.in_channels, card.spatial_dims) == (
        name, "cxr", CXR14_LABELS, 1, 2,
    )
    assert ModelCard.from_json(card.to_json()) == card

    captured: dict[str, torch.Tensor] = {}
    layer = model.get_submodule(card.gradcam_layer)

    def keep_activation(_module, _inputs, output):
        captured["activation"], captured["snapshot"] = output, output.detach().clone()

    def keep_gradient(_module, _grad_inputs, grad_outputs):
        captured["gradient"] = grad_outputs[0]

    layer.register_forward_hook(keep_activation)
    layer.register_full_backward_hook(keep_gradient)  # raises if the output is later modified in place
    model.requires_grad_(False)  # Grad-CAM needs activation gradients only; weight gradients cost time
    logits = model(torch.rand(*REDUCED_INPUT, requires_grad=True))
    assert logits.shape == (1, len(CXR14_LABELS))
    logits[0, CXR14_LABELS.index("Effusion")].backward()

    activation = captured["activation"]
    assert activation.ndim == 4 and activation.shape[0] == 1 and min(activation.shape[2:]) >= 1
    assert torch.equal(activation, captured["snapshot"]), "the Grad-CAM activation was overwritten in place"
    assert activation.shape[1] == last_linear_layer(model).in_features, "not the last feature map before pooling"
    assert captured["gradient"].shape == activation.shape


def test_resnet50_matches_torchvision_size_with_a_stride_2_stem():
    model = create_model("chexnet_resnet50")
    assert parameter_count(model) == 23_530_446  # ~23.5M for 14 labels and 1 channel
    assert model.conv1.stride == (2, 2) and model.conv1.kernel_size == (7, 7) and model.conv1.in_channels == 1
    assert model.layer2[0].downsample[0].bias is None
    assert imagenet_parameter_count(model) == 25_557_032  # torchvision resnet50


def test_wide_resnet50_doubles_only_the_inner_width_like_wrn_50_2():
    model = create_model("chexnet_wide_resnet50")
    first_block = model.layer1[0]
    assert (first_block.conv1.out_channels, first_block.conv2.out_channels, first_block.conv3.out_channels) == (
        128, 128, 256,
    )
    assert model.fc.in_features == 2048
    assert parameter_count(model) == 66_856_654
    assert imagenet_parameter_count(model) == 68_883_240  # torchvision wide_resnet50_2


def test_preact_resnet_blocks_end_on_a_bare_addition():
    torch.manual_seed(0)
    model = create_model("chexnet_preact_resnet50").eval()
    outputs: dict[str, torch.Tensor] = {}
    model.layer4.register_forward_hook(lambda _m, _i, output: outputs.__setitem__("layer4", output))
    model.final_act.register_forward_hook(lambda _m, _i, output: outputs.__setitem__("final", output))
    with torch.no_grad():
        model(torch.rand(*REDUCED_INPUT))
    assert (outputs["layer4"] < 0).any(), "a ReLU after the addition would make every value >= 0"
    assert (outputs["final"] >= 0).all()
    assert isinstance(model.layer2[0].downsample, nn.Conv2d)  # bare projection, no BN on the shortcut


def test_densenet_final_relu_is_not_in_place():
    model = create_model("chexnet_densenet121")
    assert model.card.gradcam_layer == "class_layers.relu"
    assert model.class_layers.relu.inplace is False


def test_overrides_reshape_the_head_and_reset_thresholds():
    model = create_model("chexnet_tiny", labels=("Effusion", "Edema"), in_channels=3)
    assert model.card.thresholds == {"Effusion": 0.5, "Edema": 0.5}
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 2)


@pytest.mark.parametrize("override", [{"gradcam_layer": "layer1"}, {"name": "x"}, {"no_such_field": 1}])
def test_overriding_architecture_fields_is_refused(override):
    with pytest.raises(UsageError, match="overridable card fields are") as caught:
        create_model("chexnet_tiny", **override)
    assert caught.value.reason == "usage"


def test_unknown_model_name_lists_the_valid_names():
    with pytest.raises(UnknownModelError) as caught:
        create_model("chexnet_resnet5")
    assert caught.value.reason == "unknown_model"
    message = str(caught.value)
    assert all(name in message for name in list_models())
    assert "Did you mean chexnet_resnet50" in message


def test_register_model_refuses_duplicates_and_factories_without_a_card(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model(task="cxr")
    def cardless_test_model(**overrides) -> nn.Module:
        return nn.Linear(1, 1)

    assert "cardless_test_model" in list_models("cxr")
    with pytest.raises(InvalidModelCardError, match="must attach a ModelCard"):
        create_model("cardless_test_model")
    def another_factory(**overrides) -> nn.Module:
        return nn.Linear(1, 1)

    another_factory.__name__ = "cardless_test_model"
    with pytest.raises(UsageError, match="already registered"):
        register_model(task="cxr")(another_factory)
    with pytest.raises(UsageError, match="task"):
        register_model(task="xray")


def make_card(**changes) -> ModelCard:
    fields = dict(
        name="chexnet_tiny", task="cxr", labels=CXR14_LABELS, in_channels=1, spatial_dims=2, input_size=(128, 128),
    )
    return ModelCard(**{**fields, **changes})


def test_card_defaults_and_json_round_trip_of_every_field():
    card = make_card(
        task="vol", labels=("background", "liver"), spatial_dims=3, input_size=(96, 96, 96), spacing=(1.5, 1.5, 2.0),
        normalization={"kind": "ct_window", "window": [-160, 240]}, thresholds={"liver": 0.4},
        gradcam_layer="", training_data_fingerprint="sha256:abc", extra={"epochs": 3},
    )
    assert card.thresholds == {"background": 0.5, "liver": 0.4}
    restored = ModelCard.from_json(card.to_json())
    assert restored == card and isinstance(restored.labels, tuple) and isinstance(restored.spacing, tuple)
    assert make_card().thresholds == dict.fromkeys(CXR14_LABELS, 0.5)
    assert hash(make_card()) == hash(make_card())


def test_card_from_a_newer_version_keeps_unknown_keys_in_extra():
    data = json.loads(make_card(extra={"kept": 1}).to_json())
    data["calibration"] = {"kind": "temperature", "value": 1.3}
    card = ModelCard.from_json(json.dumps(data))
    assert card.extra == {"kept": 1, "calibration": {"kind": "temperature", "value": 1.3}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"name": "chexnet_tiny", "task": "cxr"}), "lacks required fields: in_channels, input_size"),
        (make_card().to_json().replace('"cxr"', '"xray"'), "task 'xray'"),
        (make_card().to_json().replace('"Atelectasis": 0.5', '"Atelectasis": 1.5'), "probabilities"),
        (make_card().to_json().replace('"in_channels": 1', '"in_channels": "one"'), "invalid value"),
    ],
)
def test_malformed_cards_are_refused_with_a_reason(text, message):
    with pytest.raises(InvalidModelCardError, match=message) as caught:
        ModelCard.from_json(text)
    assert caught.value.reason == "invalid_model_card"


def test_card_rejects_thresholds_for_unknown_labels_and_duplicate_labels():
    with pytest.raises(InvalidModelCardError, match="Pneumonitis"):
        make_card(thresholds={"Pneumonitis": 0.2})
    with pytest.raises(InvalidModelCardError, match="unique"):
        make_card(labels=("Mass", "Mass"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_card().name = "other"  # type: ignore[misc]
