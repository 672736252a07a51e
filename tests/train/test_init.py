"""Where training starts: ``--init imagenet|none|FILE``, offline and with the file, never a silent fallback.

No test downloads anything: ``$TORCH_HOME`` is a temporary folder, ``MEDRES_OFFLINE=1`` is set (or the
download function fails or reads a local ``file://`` URL), and torch.hub's downloader is replaced by one
that fails the test wherever a download is not the point.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import urllib.error
from pathlib import Path

import pytest
import torch
from monai.networks.nets import resnet18

from medres.cli import inputs
from medres.cli.main import main
from medres.errors import CheckpointMismatchError, PretrainedWeightsMissingError, UsageError
from medres.models import PUBLISHED_MODELS, create_model, list_models, load_checkpoint, save_checkpoint
from medres.models.card import TORCHXRAYVISION_NORMALIZATION
from medres.models.pretrained import (
    IMAGENET_WEIGHTS,
    INIT_KEYWORDS,
    OFFLINE_VARIABLE,
    default_initialisation,
    imagenet_weights_file,
    initialise_weights,
    resolve_initialisation,
)
from medres.models.pretrained import initial as initial_module
from medres.synthetic.chestxray14 import make_chestxray14
from medres.synthetic.phantoms import make_ct_phantoms
from tests.models.pretrained_recipe import nih_release_file, torchvision_recipe, write_torchvision_file
from tests.models.test_pretrained import (
    FEATURE_TOLERANCE,
    NIH,
    pooled_features,
    read_reference,
    relative_difference,
)

RESNET50_FILE = "resnet50-11ad3fa6.pth"
pytestmark = pytest.mark.filterwarnings("ignore:AUROC/AUPRC are undefined")  # a few validation images, by design


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty ``$TORCH_HOME``; downloads off, and torch.hub's downloader fails the test if it is called."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv(OFFLINE_VARIABLE, "1")

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return home


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_cxr")
    make_chestxray14(root, 64, seed=3, image_size=48)
    return root


def summed_first_kernel(state: dict[str, torch.Tensor]) -> torch.Tensor:
    key = "conv1.weight" if "conv1.weight" in state else "features.conv0.weight"
    return state[key].sum(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------ defaults and table


def test_the_chexnet_recipe_models_default_to_imagenet_the_others_to_none():
    assert {name for name in list_models() if default_initialisation(name) == "imagenet"} == {
        "chexnet_densenet121", "chexnet_resnet50", "chexnet_resnet101", "chexnet_resnet152", "chexnet_wide_resnet50"}
    for name in ("chexnet_tiny", "chexnet_preact_resnet50", *list_models("seg"), *list_models("vol")):
        assert default_initialisation(name) == "none"
    assert inputs.INIT_WORDS == INIT_KEYWORDS


def test_imagenet_files_are_torchvisions_default_weights():
    """torchvision's weights definitions (torchvision/models/resnet.py, densenet.py): DEFAULT's URL per model."""
    expected = {
        "chexnet_densenet121": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
        "chexnet_resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        "chexnet_resnet101": "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
        "chexnet_resnet152": "https://download.pytorch.org/models/resnet152-f82ba261.pth",
        "chexnet_wide_resnet50": "https://download.pytorch.org/models/wide_resnet50_2-9ba9bcbe.pth",
    }
    assert {name: weights.url for name, weights in IMAGENET_WEIGHTS.items()} == expected
    assert IMAGENET_WEIGHTS["chexnet_resnet50"].hash_prefix == "11ad3fa6"


@pytest.mark.parametrize(("model", "match"), [("chexnet_tiny", "publishes no ImageNet weights"),
                                              ("chexnet_preact_resnet50", "stem"),
                                              ("resnet3d_18", "publishes no ImageNet weights")])
def test_imagenet_for_a_model_without_published_weights_is_a_usage_error(model, match, torch_home):
    with pytest.raises(UsageError, match=match):
        resolve_initialisation("imagenet", model)


# ------------------------------------------------------------------------------------- offline, no file


def test_train_offline_without_the_file_stops_with_one_line_before_reading_data(torch_home, tmp_path, capsys):
    """--data is a folder that is no ChestX-ray14 layout: reading it would fail otherwise (dataset_layout)."""
    not_a_dataset = tmp_path / "data"
    not_a_dataset.mkdir()
    (not_a_dataset / "notes.txt").write_text("not ChestX-ray14\n")
    code = main(["train", "cxr", "--data", str(not_a_dataset), "--out", str(tmp_path / "run"), "--model",
                 "chexnet_resnet50"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("medres: error: pretrained_weights_missing: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err + captured.out
    expected_place = torch_home / "hub" / "checkpoints" / RESNET50_FILE
    assert str(expected_place) in captured.err  # where to put it
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in captured.err  # where it comes from
    assert "--init none" in captured.err and OFFLINE_VARIABLE in captured.err
    assert not (tmp_path / "run").exists()


def test_a_failed_download_is_the_same_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)

    def unreachable(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(PretrainedWeightsMissingError, match="the download failed.*name resolution") as raised:
        imagenet_weights_file("chexnet_densenet121")
    assert raised.value.reason == "pretrained_weights_missing"
    assert "densenet121-a639ec97.pth" in str(raised.value)


def test_explicit_none_trains_from_random_weights_without_any_file(torch_home):
    assert resolve_initialisation("none", "chexnet_resnet50") == "none"
    model = create_model("chexnet_tiny")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert initialise_weights(model, "none") is None
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert "pretrained" not in model.card.extra


# ----------------------------------------------------------------------------------- downloading into the cache


def test_a_download_goes_into_the_hub_cache_with_torchvisions_hash_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        write_torchvision_file("resnet50", Path(dst))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = imagenet_weights_file("chexnet_resnet50")
    target = tmp_path / "torch_home" / "hub" / "checkpoints" / RESNET50_FILE
    assert calls == [("https://download.pytorch.org/models/resnet50-11ad3fa6.pth", target, "11ad3fa6")]
    assert path == target and target.is_file()
    assert imagenet_weights_file("chexnet_resnet50") == target and len(calls) == 1  # cached: no second download


def test_torch_hub_checks_the_hash_and_keeps_nothing_that_fails(tmp_path, monkeypatch):
    """torch.hub's own downloader on local file:// URLs: a file whose SHA-256 fits the name's prefix is cached,
    one that does not (a tampered download) is refused and never reaches the cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(OFFLINE_VARIABLE, raising=False)
    mirror = tmp_path / "mirror"
    staged = mirror / "staged.pth"
    write_torchvision_file("resnet50", staged)
    prefix = hashlib.sha256(staged.read_bytes()).hexdigest()[:8]
    genuine = staged.rename(mirror / f"resnet50-{prefix}.pth")
    (mirror / RESNET50_FILE).write_bytes(genuine.read_bytes())  # the same bytes under the real name: wrong hash
    monkeypatch.setattr(initial_module, "TORCHVISION_DOWNLOADS", mirror.as_uri() + "/")

    with pytest.raises(PretrainedWeightsMissingError, match="invalid hash value"):
        imagenet_weights_file("chexnet_resnet50", progress=False)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert not any(cache.iterdir())

    recorded = initial_module.ImagenetWeights("chexnet_resnet50", "ResNet50_Weights.IMAGENET1K_V2", genuine.name)
    monkeypatch.setitem(IMAGENET_WEIGHTS, "chexnet_resnet50", recorded)
    assert imagenet_weights_file("chexnet_resnet50", progress=False).read_bytes() == genuine.read_bytes()


# --------------------------------------------------------------------------------------- starting from ImageNet


@pytest.mark.parametrize(("architecture", "model_name"), [("resnet50", "chexnet_resnet50"),
                                                          ("densenet121", "chexnet_densenet121")])
def test_imagenet_init_fills_the_model_with_the_cached_file(architecture, model_name, torch_home):
    file_name = IMAGENET_WEIGHTS[model_name].file_name
    state = write_torchvision_file(architecture, torch_home / "hub" / "checkpoints" / file_name)
    _, reference = torchvision_recipe(architecture)
    torch.manual_seed(0)
    model = create_model(model_name)
    provenance = initialise_weights(model, "imagenet")
    first_convolution = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    torch.testing.assert_close(first_convolution.weight, summed_first_kernel(state), rtol=0, atol=0)
    features = pooled_features(model, reference["gray_input"])
    assert relative_difference(features, reference["features"]) <= FEATURE_TOLERANCE
    assert model.card.extra["pretrained"] == provenance
    assert provenance["init"] == "imagenet" and provenance["file"] == file_name
    assert provenance["url"] == IMAGENET_WEIGHTS[model_name].url and provenance["head"].startswith("new")
    assert provenance["sha256"] == hashlib.sha256((torch_home / "hub" / "checkpoints" / file_name).read_bytes()
                                                  ).hexdigest()


def test_train_cxr_starts_from_the_imagenet_file_and_its_card_says_so(torch_home, tiny_data, tmp_path):
    """Learning rate 0: Adam then changes no weight, so the trained first convolution is still the summed
    recipe kernel (batch-norm statistics do move); the run's config and card record where it started."""
    state = write_torchvision_file("resnet50", torch_home / "hub" / "checkpoints" / RESNET50_FILE)
    run = tmp_path / "run"
    assert main(["train", "cxr", "--data", str(tiny_data), "--out", str(run), "--model", "chexnet_resnet50",
                 "--input-size", "32", "--epochs", "1", "--batch-size", "16", "--lr", "0", "--no-augment",
                 "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["init"] == "imagenet"
    model = load_checkpoint(run / "last.safetensors")
    torch.testing.assert_close(model.conv1.weight, summed_first_kernel(state), rtol=0, atol=0)
    provenance = model.card.extra["pretrained"]
    assert (provenance["init"], provenance["source"], provenance["file"]) == ("imagenet", "torchvision", RESNET50_FILE)
    assert model.card.labels == create_model("chexnet_resnet50").card.labels  # the 14 labels, a new head


# ------------------------------------------------------------------------------------------------ from a FILE


def test_init_from_a_published_file_is_detected_from_its_keys(torch_home, tmp_path):
    source = tmp_path / "downloaded" / "some_resnet.pth"
    state = write_torchvision_file("resnet50", source)
    assert resolve_initialisation(str(source), "chexnet_resnet50") == str(source)
    model = create_model("chexnet_resnet50")
    provenance = initialise_weights(model, str(source))
    torch.testing.assert_close(model.conv1.weight, summed_first_kernel(state), rtol=0, atol=0)
    assert provenance["source"] == "torchvision" and "init" not in provenance
    with pytest.raises(CheckpointMismatchError, match="holds chexnet_resnet50 weights.*--model chexnet_resnet50"):
        initialise_weights(create_model("chexnet_densenet121"), str(source))


def test_init_from_a_torchxrayvision_release_keeps_its_head_by_label_and_its_intensities(torch_home, tmp_path):
    """Fine-tuning the NIH model on ChestX-ray14: its 14 findings are the run's labels (in another order)."""
    release = nih_release_file(tmp_path / "release")
    reference = read_reference(f"torchxrayvision_{NIH}.safetensors")[0]
    model = create_model("chexnet_densenet121")
    provenance = initialise_weights(model, str(release))
    assert provenance["source"] == "torchxrayvision" and provenance["variant"] == NIH
    assert provenance["head"].startswith("copied") and model.card.normalization == TORCHXRAYVISION_NORMALIZATION
    with torch.no_grad():
        logits = model.eval()(reference["model_input"])[0]
    release_outputs = list(PUBLISHED_MODELS[NIH].outputs)
    for position, label in enumerate(model.card.labels):
        expected = reference["logits"][0, release_outputs.index(label)]
        assert abs(float(logits[position] - expected)) <= 1e-4


def test_init_from_a_medres_checkpoint_is_strict_and_keeps_the_card(torch_home, tmp_path):
    torch.manual_seed(1)
    trained = create_model("chexnet_tiny")
    checkpoint = save_checkpoint(trained, tmp_path / "tiny.safetensors")
    model = create_model("chexnet_tiny")
    assert initialise_weights(model, str(checkpoint)) is None
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert "pretrained" not in model.card.extra
    with pytest.raises(CheckpointMismatchError):
        initialise_weights(create_model("chexnet_tiny", labels=("A", "B")), str(checkpoint))


def test_init_refuses_a_pickle_that_would_run_code(torch_home, tmp_path, capsys):
    from tests.models.test_pretrained import RunsACommandWhenUnpickled

    marker = tmp_path / "the_command_ran"
    weights = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "payload": RunsACommandWhenUnpickled(marker)}, weights)
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("x\n")
    code = main(["train", "cxr", "--data", str(data), "--out", str(tmp_path / "run"), "--init", str(weights)])
    assert code == 2 and "unsafe_checkpoint" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [("train", "cxr"), ("train", "seg"), ("train", "vol")])
def test_the_input_check_passes_the_words_and_wants_a_file_otherwise(command, tmp_path):
    for word in ("imagenet", "none"):
        inputs.check_inputs(command, argparse.Namespace(init=word))
    weights = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, weights)
    inputs.check_inputs(command, argparse.Namespace(init=str(weights)))  # a pickle: read safely later, not refused
    with pytest.raises(UsageError, match="must be a file"):
        inputs.check_inputs(command, argparse.Namespace(init=str(tmp_path)))


def test_init_of_a_missing_file_is_not_found(torch_home, tmp_path, capsys):
    code = main(["train", "cxr", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--init",
                 str(tmp_path / "nowhere.pth")])
    assert code == 2 and capsys.readouterr().err.startswith("medres: error: not_found: ")


# ----------------------------------------------------------------------------------------- train vol, MedicalNet


def write_medicalnet_resnet18(path: Path) -> dict[str, torch.Tensor]:
    """MedicalNet's layout (from MONAI's 3D ResNet-18, shortcut A with bias, plus ``module.`` and ``conv_seg``)."""
    torch.manual_seed(18)
    backbone = resnet18(spatial_dims=3, n_input_channels=1, shortcut_type="A", bias_downsample=True,
                        feed_forward=False).state_dict()
    head = {"conv_seg.0.weight": torch.randn(512, 32, 2, 2, 2), "conv_seg.0.bias": torch.randn(32)}
    torch.save({"state_dict": {f"module.{key}": value for key, value in {**backbone, **head}.items()}}, path)
    return backbone


def test_train_vol_starts_from_a_medicalnet_file(torch_home, tmp_path):
    medicalnet = tmp_path / "resnet_18_23dataset.pth"
    backbone = write_medicalnet_resnet18(medicalnet)
    model = create_model("resnet3d_18", input_size=(32, 32, 32))
    provenance = initialise_weights(model, str(medicalnet), strict=False)
    assert provenance["source"] == "medicalnet" and provenance["head"].startswith("new")
    for key, value in backbone.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)

    data = make_ct_phantoms(tmp_path / "phantoms", 6, seed=7, dicom_cases=0)
    run = tmp_path / "run"
    assert main(["train", "vol", "--data", str(data), "--out", str(run), "--model", "resnet3d_18", "--init",
                 str(medicalnet), "--input-size", "32", "32", "32", "--epochs", "1", "--batch-size", "2", "--lr", "0",
                 "--val-fraction", "0.34", "--no-progress"]) == 0
    trained = load_checkpoint(run / "last.safetensors")
    torch.testing.assert_close(trained.conv1.weight, backbone["conv1.weight"], rtol=0, atol=0)
    assert trained.card.extra["pretrained"]["file"] == medicalnet.name
    assert json.loads((run / "config.json").read_text())["init"] == str(medicalnet)


def test_models_without_imagenet_weights_resolve_to_none_without_any_file(torch_home):
    for name in ("resunet3d", "resnet3d_18", "chexnet_tiny", "chexnet_preact_resnet50"):
        assert resolve_initialisation(None, name) == "none"
