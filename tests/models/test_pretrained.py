"""Importing published weights, checked against what torchvision and torchxrayvision themselves computed.

The reference files (tests/data/pretrained, copied from ../shared/reference/pretrained; see its README)
hold torchvision 0.28's and torchxrayvision 1.5.7's outputs for weights made by a seeded recipe. These
tests rebuild the recipe weights in each library's state-dict layout, write them in each published
file format, import them, and compare the medres model's outputs with the libraries' own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import types
import warnings
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from medres.cli import import_weights as import_weights_cli
from medres.cli.main import main
from medres.errors import (
    CheckpointMismatchError,
    CorruptError,
    InvalidModelCardError,
    UnsafeCheckpointError,
    UsageError,
)
from medres.io import read_image
from medres.models import ModelCard, create_model, import_weights, load_checkpoint
from medres.models.card import TORCHXRAYVISION_NORMALIZATION
from medres.models.pretrained import PUBLISHED_MODELS, SOURCES, detect_source, load_pickled_tensors
from medres.models.pretrained.safe_pickle import load_object
from medres.transforms.cxr import (
    CxrInputTransform,
    center_square_box,
    preprocess_for_model,
    to_stored,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "pretrained"
SHARED = REPO.parent / "shared" / "reference" / "pretrained"
RELEASE_PICKLE = SHARED / "torchxrayvision_densenet121_recipe_module.pt"
NIH = "densenet121-res224-nih"
TORCHVISION_ARCHITECTURES = {
    "densenet121": "chexnet_densenet121", "resnet50": "chexnet_resnet50", "resnet101": "chexnet_resnet101",
    "resnet152": "chexnet_resnet152", "wide_resnet50_2": "chexnet_wide_resnet50",
}
FEATURE_TOLERANCE = 1e-5  # relative to the largest |feature| (the criterion)
LOGIT_TOLERANCE = 1e-5


# ----------------------------------------------------------------------------------------------- the recipe


def read_reference(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A reference file's tensors and its JSON metadata."""
    with safe_open(DATA / name, "pt") as opened:
        return {key: opened.get_tensor(key) for key in opened.keys()}, json.loads(opened.metadata()["json"])


def recipe_state_dict(entries: list[dict]) -> dict[str, torch.Tensor]:
    """The README's weight recipe: every tensor drawn from a generator seeded by its key."""
    state = {}
    for entry in entries:
        key, shape = entry["key"], tuple(entry["shape"])
        if entry["dtype"] != "float32":
            state[key] = torch.zeros(shape, dtype=getattr(torch, entry["dtype"]))
            continue
        rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
        last = key.rsplit(".", 1)[-1]
        if last == "running_mean":
            values = rng.normal(0.0, 0.1, shape)
        elif last == "running_var":
            values = rng.uniform(0.5, 1.5, shape)
        elif last == "bias":
            values = rng.normal(0.0, 0.05, shape)
        elif len(shape) == 1:
            values = rng.uniform(0.5, 1.0, shape)
        else:
            values = rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[1:])), shape)
        state[key] = torch.from_numpy(values.astype(np.float32))
    return state


def pooled_features(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What enters the model's last linear layer: the pooled features torchvision's fixture holds."""
    head = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    captured = {}
    handle = head.register_forward_pre_hook(lambda module, args: captured.setdefault("features", args[0]))
    try:
        with torch.no_grad():
            model.eval()(inputs)
    finally:
        handle.remove()
    return captured["features"]


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def run_import_command(*argv: str) -> int:
    """``medres import-weights ...`` through its own parser (the subcommand module's register/handler)."""
    parser = argparse.ArgumentParser(prog="medres")
    import_weights_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import-weights", *map(str, argv)])
    return args.handler(args)


# --------------------------------------------------------------------------------------- torchvision / timm


@pytest.fixture(scope="module", params=list(TORCHVISION_ARCHITECTURES))
def torchvision_reference(request, tmp_path_factory):
    """One architecture's fixture, its recipe weights, and the weights as a torchvision .pth and a timm file."""
    architecture = request.param
    tensors, metadata = read_reference(f"torchvision_{architecture}.safetensors")
    state = recipe_state_dict(metadata["state_dict"])
    folder = tmp_path_factory.mktemp(architecture)
    legacy_names = metadata.get("legacy_key_names", {})
    published_layout = {legacy_names.get(key, key): tensor for key, tensor in state.items()
                        # files saved before PyTorch 0.4.1 (torchvision's DenseNet among them) have no BN counters
                        if not (legacy_names and key.endswith("num_batches_tracked"))}
    torch.save(published_layout, folder / f"{architecture}.pth")
    save_file(state, folder / f"{architecture}.safetensors")
    yield types.SimpleNamespace(architecture=architecture, model=TORCHVISION_ARCHITECTURES[architecture],
                                tensors=tensors, metadata=metadata, state=state, folder=folder,
                                legacy_names=legacy_names)
    for file in folder.iterdir():
        file.unlink()


def test_the_recipe_reproduces_the_reference_probe_values(torchvision_reference):
    for key, first_values in torchvision_reference.metadata["recipe_probe"].items():
        np.testing.assert_allclose(torchvision_reference.state[key].flatten()[:4].numpy(), first_values, rtol=1e-6)


def test_torchvision_file_imports_into_a_one_channel_model_with_torchvision_features(torchvision_reference):
    reference = torchvision_reference
    source_file = reference.folder / f"{reference.architecture}.pth"
    if reference.legacy_names:  # the DenseNet file really uses the legacy names the published file has
        assert "features.denseblock1.denselayer1.norm.1.weight" in torch.load(source_file, weights_only=True)
    model = import_weights(source_file, "torchvision")
    features = pooled_features(model, reference.tensors["gray_input"])
    assert relative_difference(features, reference.tensors["features"]) <= FEATURE_TOLERANCE
    first_convolution = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    rgb_kernel = reference.state["conv1.weight" if "conv1.weight" in reference.state else "features.conv0.weight"]
    torch.testing.assert_close(first_convolution.weight, rgb_kernel.sum(dim=1, keepdim=True), rtol=0, atol=0)
    card = model.card
    assert (card.name, card.in_channels, len(card.labels)) == (reference.model, 1, 14)
    assert card.extra["pretrained"]["file"] == source_file.name
    assert card.extra["pretrained"]["sha256"] == hashlib.sha256(source_file.read_bytes()).hexdigest()
    assert card.extra["pretrained"]["head"].startswith("new")


def test_import_command_writes_an_ordinary_checkpoint_that_keeps_the_features(tmp_path, capsys):
    """``medres import-weights`` on a file as torchvision's DenseNet one is, then ``load_checkpoint``.

    That file predates PyTorch 1.6, so it is in torch's legacy (non-zip) format, with legacy key names.
    """
    tensors, metadata = read_reference("torchvision_densenet121.safetensors")
    legacy_names = metadata["legacy_key_names"]
    source_file = tmp_path / "densenet121-a639ec97.pth"
    state = recipe_state_dict(metadata["state_dict"])
    torch.save({legacy_names.get(key, key): tensor for key, tensor in state.items()}, source_file,
               _use_new_zipfile_serialization=False)
    assert detect_source(source_file) == "torchvision"
    assert run_import_command(source_file, "--from", "torchvision", "--out", tmp_path / "imported.safetensors") == 0
    assert "chexnet_densenet121" in capsys.readouterr().out
    model = load_checkpoint(tmp_path / "imported.safetensors")
    assert relative_difference(pooled_features(model, tensors["gray_input"]), tensors["features"]) <= FEATURE_TOLERANCE
    assert model.card.extra["pretrained"]["file"] == "densenet121-a639ec97.pth"
    assert detect_source(tmp_path / "imported.safetensors") == "medres"


def test_timm_safetensors_imports_with_torchvision_features(torchvision_reference):
    reference = torchvision_reference
    source_file = reference.folder / f"{reference.architecture}.safetensors"
    assert detect_source(source_file) == "timm"
    model = import_weights(source_file, "timm")
    assert model.card.name == reference.model
    features = pooled_features(model, reference.tensors["gray_input"])
    assert relative_difference(features, reference.tensors["features"]) <= FEATURE_TOLERANCE


def test_keeping_the_imagenet_head_reproduces_torchvision_logits(torchvision_reference):
    reference = torchvision_reference
    model = import_weights(reference.folder / f"{reference.architecture}.pth", "torchvision", keep_imagenet_head=True)
    assert (model.card.in_channels, len(model.card.labels)) == (3, 1000)
    with torch.no_grad():
        logits = model(reference.tensors["gray_input"].repeat(1, 3, 1, 1))
    assert relative_difference(logits, reference.tensors["logits"]) <= LOGIT_TOLERANCE


def test_safetensors_whose_header_length_starts_like_a_pickle_is_still_safetensors(tmp_path):
    """A header 128 bytes past a multiple of 256 makes the file's first byte 0x80, a pickle's first opcode."""
    path = tmp_path / "weights.safetensors"
    for padding in range(256):
        save_file({"conv1.weight": torch.zeros(2)}, path, metadata={"padding": "x" * padding})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert detect_source(path) == "timm"


def test_a_new_head_is_the_same_for_the_same_file(tmp_path):
    state = {key: tensor for key, tensor in create_model("chexnet_resnet50", in_channels=3).state_dict().items()
             if not key.startswith("fc.")}
    torch.save(state, tmp_path / "resnet50.pth")
    first, second = (import_weights(tmp_path / "resnet50.pth", "torchvision") for _ in range(2))
    torch.testing.assert_close(first.fc.weight, second.fc.weight, rtol=0, atol=0)


def test_a_file_for_another_architecture_is_refused_with_every_mismatch(tmp_path):
    torch.save(create_model("chexnet_resnet50").state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(CheckpointMismatchError, match=r"layer3\.6\.conv1\.weight") as raised:
        import_weights(tmp_path / "resnet50.pth", "torchvision", model="chexnet_resnet101")
    assert raised.value.reason == "checkpoint_mismatch"


def test_timm_preactivation_resnet_is_refused_with_the_reason():
    """timm's resnetv2_50 stem has no BN-ReLU; chexnet_preact_resnet50's MONAI stem has one (see key_maps)."""
    from medres.models.pretrained import detect_architecture

    with pytest.raises(UsageError, match="stem"):
        detect_architecture({"stem.conv.weight": torch.zeros(64, 3, 7, 7),
                             "stages.0.blocks.0.norm1.weight": torch.zeros(64)})


# --------------------------------------------------------------------------------------------- torchxrayvision


class DenseNet(nn.Module):
    """A module laid out and named as torchxrayvision's DenseNet, pickled as its release files are."""

    def __init__(self, blocks=(6, 12, 24, 16), growth=32, initial=64, outputs=18):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(1, initial, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(initial)),
            ("relu0", nn.ReLU(inplace=True)), ("pool0", nn.MaxPool2d(3, 2, 1))]))
        width = initial
        for index, layers in enumerate(blocks, start=1):
            self.features.add_module(f"denseblock{index}", _DenseBlock(layers, width, growth))
            width += layers * growth
            if index < len(blocks):
                self.features.add_module(f"transition{index}", _Transition(width, width // 2))
                width //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(width))
        self.classifier = nn.Linear(width, outputs)
        self.register_buffer("op_threshs", None)
        self.apply_sigmoid = False


class _DenseLayer(nn.Sequential):
    def __init__(self, width, growth):
        super().__init__(OrderedDict([
            ("norm1", nn.BatchNorm2d(width)), ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(width, 4 * growth, 1, bias=False)), ("norm2", nn.BatchNorm2d(4 * growth)),
            ("relu2", nn.ReLU(inplace=True)), ("conv2", nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))]))


class _DenseBlock(nn.Sequential):
    def __init__(self, layers, width, growth):
        super().__init__(OrderedDict(
            (f"denselayer{index + 1}", _DenseLayer(width + index * growth, growth)) for index in range(layers)))


class _Transition(nn.Sequential):
    def __init__(self, width, narrower):
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(width)), ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(width, narrower, 1, bias=False)), ("pool", nn.AvgPool2d(2, 2))]))


TORCHXRAYVISION_CLASSES = (DenseNet, _DenseBlock, _DenseLayer, _Transition)


def save_as_torchxrayvision_module(module: nn.Module, path: Path, zip_format: bool = True) -> None:
    """``torch.save(model)`` with the classes named ``torchxrayvision.models.*``, as the release files are."""
    package, models = types.ModuleType("torchxrayvision"), types.ModuleType("torchxrayvision.models")
    package.models = models
    originals = {cls: cls.__module__ for cls in TORCHXRAYVISION_CLASSES}
    try:
        for cls in TORCHXRAYVISION_CLASSES:
            cls.__module__ = "torchxrayvision.models"
            setattr(models, cls.__name__, cls)
        sys.modules.update({"torchxrayvision": package, "torchxrayvision.models": models})
        with warnings.catch_warnings():  # the legacy format looks for the classes' source file, which is this one
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code", category=UserWarning)
            torch.save(module, path, _use_new_zipfile_serialization=zip_format)
    finally:
        for name in ("torchxrayvision", "torchxrayvision.models"):
            sys.modules.pop(name, None)
        for cls, module_name in originals.items():
            cls.__module__ = module_name


@pytest.fixture(scope="module")
def nih_reference():
    tensors, metadata = read_reference(f"torchxrayvision_{NIH}.safetensors")
    return types.SimpleNamespace(tensors=tensors, metadata=metadata, state=recipe_state_dict(metadata["state_dict"]))


@pytest.fixture(scope="module")
def nih_module(nih_reference):
    module = DenseNet()
    module.load_state_dict(nih_reference.state, strict=True)  # the layout is exactly torchxrayvision's
    return module


@pytest.fixture(scope="module")
def nih_release_file(nih_module, tmp_path_factory):
    """The recipe NIH model pickled as torchxrayvision's release file is (named as the release file)."""
    path = tmp_path_factory.mktemp("xrv") / PUBLISHED_MODELS[NIH].release_file
    save_as_torchxrayvision_module(nih_module, path)
    return path


@pytest.fixture(scope="module")
def nih_checkpoint(nih_release_file, tmp_path_factory):
    """``medres import-weights`` of the release file (variant recognised from the file's name)."""
    out = tmp_path_factory.mktemp("xrv_checkpoint") / "nih.safetensors"
    assert run_import_command(nih_release_file, "--from", "torchxrayvision", "--out", out) == 0
    return out


def test_published_table_matches_torchxrayvision_metadata(nih_reference):
    published = PUBLISHED_MODELS[NIH]
    assert list(published.outputs) == nih_reference.metadata["labels"]
    expected = [None if value is None or np.isnan(value) else value for value in nih_reference.metadata["op_threshs"]]
    assert list(published.op_threshs) == expected
    assert published.input_resolution == nih_reference.tensors["model_input"].shape[-1] == 224
    assert published.labels == tuple(label for label in nih_reference.metadata["labels"] if label)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_safe_loader_recovers_every_tensor_of_a_pickled_module(nih_module, tmp_path, zip_format):
    path = tmp_path / "module.pt"
    save_as_torchxrayvision_module(nih_module, path, zip_format)
    tensors = load_pickled_tensors(path)
    expected = nih_module.state_dict()
    assert list(tensors) == list(expected)  # state_dict's names and order, 727 tensors
    for key, tensor in expected.items():
        torch.testing.assert_close(tensors[key], tensor, rtol=0, atol=0)
    assert not any(name.startswith("torchxrayvision") for name in sys.modules)  # stand-ins, nothing imported
    assert load_object(path).pickled_name == "torchxrayvision.models.DenseNet"
    assert detect_source(path) == "torchxrayvision"


def test_torchxrayvision_import_gives_its_logits_labels_and_thresholds(nih_checkpoint, nih_reference):
    model = load_checkpoint(nih_checkpoint)
    published, card = PUBLISHED_MODELS[NIH], model.card
    with torch.no_grad():
        logits = model(nih_reference.tensors["model_input"])
    named = [index for index, label in enumerate(nih_reference.metadata["labels"]) if label]
    assert float((logits - nih_reference.tensors["logits"][:, named]).abs().max()) <= LOGIT_TOLERANCE
    assert card.labels == published.labels and len(card.labels) == 14
    published_thresholds = nih_reference.metadata["op_threshs"][:14]
    assert card.thresholds == pytest.approx(dict(zip(card.labels, published_thresholds, strict=True)))
    assert (card.input_size, card.crop, card.normalization) == ((224, 224), "center_square",
                                                                TORCHXRAYVISION_NORMALIZATION)
    assert card.extra["pretrained"]["variant"] == NIH and card.extra["pretrained"]["head"].startswith("copied")


@pytest.mark.skipif(not RELEASE_PICKLE.is_file(), reason=f"the torchxrayvision-made module pickle (28 MB) is only "
                    f"in ../shared/reference/pretrained, not in this clone ({RELEASE_PICKLE} is absent)")
def test_the_pickle_torchxrayvision_wrote_imports_with_its_logits(nih_reference):
    tensors = load_pickled_tensors(RELEASE_PICKLE)
    assert list(tensors) == [entry["key"] for entry in nih_reference.metadata["state_dict"]]  # all 727
    for key, tensor in nih_reference.state.items():
        torch.testing.assert_close(tensors[key], tensor, rtol=0, atol=0)
    model = import_weights(RELEASE_PICKLE, "torchxrayvision", variant=NIH)
    with torch.no_grad():
        logits = model(nih_reference.tensors["model_input"])
    assert float((logits - nih_reference.tensors["logits"][:, :14]).abs().max()) <= LOGIT_TOLERANCE


def test_card_preprocessing_is_close_to_torchxrayvision_on_a_real_radiograph(nih_checkpoint, nih_reference):
    """normalize(png, 255) -> XRayCenterCrop -> XRayResizer(224) (skimage) vs medres's own preprocessing.

    The remaining difference is the resampler (torch's antialiased bilinear vs skimage's Gaussian then
    bilinear, whose constant mode pulls the border towards 0) and the uint8 stored image (<= 4 units).
    Without the centre crop the image would be squeezed and far off, which this also checks.
    """
    card = load_checkpoint(nih_checkpoint).card
    array = read_image(DATA / "chest_rg1_8bit.png").array  # 603 x 640
    expected = nih_reference.tensors["model_input"][0]
    medres_input = preprocess_for_model(array, card)
    difference = (medres_input - expected).abs()
    assert medres_input.shape == expected.shape
    assert float(medres_input.min()) == -1024.0 and float(medres_input.max()) <= 1024.0
    assert float(difference.max()) < 128 and float(difference.mean()) < 8  # of [-1024, 1024]; observed 82, 3.7
    assert center_square_box(603, 640) == (0, 19, 603)  # XRayCenterCrop: start = length // 2 - side // 2
    squeezed = CxrInputTransform(card)(to_stored(array, card.stored_size, crop="none"))
    assert float((squeezed - expected).abs().mean()) > 4 * float(difference.mean())


def test_score_with_the_imported_model_gives_torchxrayvision_probabilities_and_calls(nih_checkpoint, nih_reference,
                                                                                      tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "chest.png").write_bytes((DATA / "chest_rg1_8bit.png").read_bytes())
    assert main(["score", str(folder), "--checkpoint", str(nih_checkpoint), "--out", str(tmp_path / "out"),
                 "--precision", "fp32", "--workers", "1", "--no-progress"]) == 0
    row = pd.read_csv(tmp_path / "out" / "scores.csv").iloc[0]
    labels = PUBLISHED_MODELS[NIH].labels
    probabilities = np.array([row[f"prob_{label}"] for label in labels])
    expected = torch.sigmoid(nih_reference.tensors["logits"][0, :14]).numpy()
    assert np.abs(probabilities - expected).max() <= 0.02  # observed 0.0014
    calls = np.array([row[f"call_{label}"] for label in labels])
    torchxrayvision_calls = (nih_reference.tensors["calibrated"][0, :14] >= 0.5).numpy()  # op_norm maps t to 0.5
    np.testing.assert_array_equal(calls.astype(bool), torchxrayvision_calls)


def test_score_still_refuses_the_release_pickle_itself(nih_release_file, tmp_path, capsys):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "chest.png").write_bytes((DATA / "chest_rg1_8bit.png").read_bytes())
    code = main(["score", str(tmp_path / "export"), "--checkpoint", str(nih_release_file), "--out",
                 str(tmp_path / "out")])
    assert code == 2 and "unsafe_checkpoint" in capsys.readouterr().err


def test_variant_must_be_named_when_the_file_name_does_not_say(nih_release_file, tmp_path):
    renamed = tmp_path / "model.pt"
    renamed.write_bytes(nih_release_file.read_bytes())
    with pytest.raises(UsageError, match="densenet121-res224-nih"):
        import_weights(renamed, "torchxrayvision")
    assert import_weights(renamed, "torchxrayvision", variant=NIH).card.labels == PUBLISHED_MODELS[NIH].labels


@pytest.mark.parametrize("variant", sorted(PUBLISHED_MODELS))
def test_every_published_variant_has_consistent_facts(variant):
    published = PUBLISHED_MODELS[variant]
    assert len(published.outputs) == len(published.op_threshs) == 18
    assert published.labels and all(published.outputs[index] for index in published.output_indices)
    assert all(0.0 < value < 1.0 for value in published.thresholds.values())
    assert published.input_resolution == (512 if variant.startswith("resnet50") else 224)
    assert published.architecture == ("chexnet_resnet50" if variant.startswith("resnet50") else "chexnet_densenet121")


# ------------------------------------------------------------------------------------------------- MedicalNet


@pytest.mark.parametrize("depth", [18, 50])
def test_medicalnet_file_imports_strictly_as_monai_maps_it(depth, tmp_path):
    """MedicalNet's layout made from MONAI's 3D ResNet (shortcut A with bias for 18, B without for 50)."""
    from monai.networks.nets import resnet18, resnet50

    factory, shortcut, bias = {18: (resnet18, "A", True), 50: (resnet50, "B", False)}[depth]
    torch.manual_seed(depth)
    backbone = factory(spatial_dims=3, n_input_channels=1, shortcut_type=shortcut, bias_downsample=bias,
                       feed_forward=False).state_dict()
    width = 512 * (4 if depth == 50 else 1)
    segmentation_head = {"conv_seg.0.weight": torch.randn(width, 32, 2, 2, 2), "conv_seg.0.bias": torch.randn(32),
                         "conv_seg.1.weight": torch.rand(32), "conv_seg.6.weight": torch.randn(2, 32, 1, 1, 1)}
    medicalnet_layout = {f"module.{key}": tensor for key, tensor in {**backbone, **segmentation_head}.items()}
    source_file = tmp_path / f"resnet_{depth}_23dataset.pth"
    torch.save({"state_dict": medicalnet_layout}, source_file)

    model = import_weights(source_file, "medicalnet")
    assert model.card.name == f"resnet3d_{depth}" and detect_source(source_file) == "medicalnet"
    imported = model.state_dict()
    assert set(imported) - set(backbone) == {"fc.weight", "fc.bias"}  # every backbone tensor, nothing else
    for key, tensor in backbone.items():
        torch.testing.assert_close(imported[key], tensor, rtol=0, atol=0)

    # MONAI's own loader (``resnet*(pretrained=path)`` strips ``module.`` and loads strictly) agrees.
    flat = tmp_path / "flat.pth"
    torch.save({key: tensor for key, tensor in medicalnet_layout.items() if ".conv_seg." not in key}, flat)
    monai_model = factory(pretrained=str(flat), spatial_dims=3, n_input_channels=1, shortcut_type=shortcut,
                          bias_downsample=bias, feed_forward=False)
    for key, tensor in monai_model.state_dict().items():
        torch.testing.assert_close(imported[key], tensor, rtol=0, atol=0)


# ----------------------------------------------------------------------------- no code from a weights file runs


class RunsACommandWhenUnpickled:
    """A pickle payload: unpickling calls ``os.system`` with a harmless command that writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo ran > {shlex.quote(str(self.marker))}",)


@pytest.fixture(params=["zip", "legacy"])
def malicious_file(request, tmp_path):
    marker = tmp_path / "the_command_ran"
    path = tmp_path / f"weights_{request.param}.pth"
    content = {"conv1.weight": torch.zeros(64, 3, 7, 7), "payload": RunsACommandWhenUnpickled(marker)}
    torch.save(content, path, _use_new_zipfile_serialization=request.param == "zip")
    return path, marker


def test_the_malicious_file_does_run_its_command_under_a_plain_torch_load(malicious_file):
    path, marker = malicious_file
    torch.load(path, weights_only=False)
    assert marker.is_file()


@pytest.mark.parametrize("source", SOURCES)
def test_import_refuses_a_file_whose_pickle_runs_a_command(malicious_file, source, tmp_path):
    path, marker = malicious_file
    variant = ["--variant", NIH] if source == "torchxrayvision" else []
    with pytest.raises(UnsafeCheckpointError) as raised:
        run_import_command(path, "--from", source, *variant, "--out", tmp_path / "never.safetensors")
    assert raised.value.reason == "unsafe_checkpoint"
    assert not marker.exists() and not (tmp_path / "never.safetensors").exists()


def test_safe_loader_refuses_a_module_pickle_that_calls_a_function(tmp_path):
    marker = tmp_path / "the_command_ran"
    module = nn.Linear(2, 2)
    module.hook = RunsACommandWhenUnpickled(marker)
    torch.save(module, tmp_path / "module.pt")
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_pickled_tensors(tmp_path / "module.pt")
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_damaged_module_pickle_is_corrupt_not_a_crash(nih_module, tmp_path, zip_format):
    path = tmp_path / "module.pt"
    save_as_torchxrayvision_module(nih_module, path, zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptError) as raised:
        load_pickled_tensors(path)
    assert raised.value.reason == "corrupt" and str(path) in str(raised.value)
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(CorruptError, match="not a weights file"):
        import_weights(tmp_path / "notes.txt", "torchxrayvision", variant=NIH)


# ----------------------------------------------------------------------------------------------- the card


def test_cards_written_before_the_crop_field_load_and_preprocess_as_before():
    old = json.loads(create_model("chexnet_tiny").card.to_json())
    del old["crop"]
    card = ModelCard.from_json(json.dumps(old))
    assert card.crop == "none" and "crop" not in card.extra
    array = read_image(DATA / "chest_rg1_8bit.png").array
    before = CxrInputTransform(card)(to_stored(array, card.stored_size))  # the call made before crops existed
    torch.testing.assert_close(preprocess_for_model(array, card), before, rtol=0, atol=0)
    with pytest.raises(InvalidModelCardError, match="crop"):
        ModelCard.from_json(json.dumps({**old, "crop": "random"}))


def test_torchxrayvision_normalization_maps_8_bit_values_to_plus_minus_1024():
    values = torch.tensor([0.0, 127.5, 255.0]) / 255.0
    normalised = (values - TORCHXRAYVISION_NORMALIZATION["mean"]) / TORCHXRAYVISION_NORMALIZATION["std"]
    torch.testing.assert_close(normalised, torch.tensor([-1024.0, 0.0, 1024.0]))
