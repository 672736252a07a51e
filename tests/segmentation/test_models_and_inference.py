"""3D models in the registry, checkpoints with their card, ``segment_image`` and the segment / train seg CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medres.cli.main import main
from medres.data.volumes import load_volume_dataset
from medres.inference import SlidingWindowSettings, sliding_window_logits
from medres.io import read_image
from medres.models import create_model, list_models, load_checkpoint, save_checkpoint
from medres.segment import labels as segment_labels
from medres.segment.labels import probabilities_to_labels, segment_image
from medres.synthetic.phantoms import PHANTOM_LABELS, make_ct_phantoms
from medres.transforms.volume import on_same_grid, prepare_volume

CT_NORMALIZATION = {"kind": "per_channel",
                    "channels": [{"kind": "ct_clip_zscore", "clip_low": -100.0, "clip_high": 300.0,
                                  "mean": 60.0, "std": 60.0}]}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return make_ct_phantoms(tmp_path_factory.mktemp("phantoms"), 3, seed=7)


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny U-Net with a phantom-like card (its labels are noise, its geometry is not)."""
    torch.manual_seed(0)
    model = create_model("resunet3d_tiny", labels=PHANTOM_LABELS, spacing=(4.0, 4.0, 5.0),
                         normalization=CT_NORMALIZATION, mirror_axes=(0, 1, 2))
    return save_checkpoint(model, tmp_path_factory.mktemp("untrained") / "tiny.safetensors")


def test_registry_has_the_3d_models():
    assert {"resunet3d", "resunet3d_tiny"} <= set(list_models("seg"))
    assert {"resnet3d_18", "resnet3d_50", "resnet3d_tiny"} <= set(list_models("vol"))


@pytest.mark.parametrize("name, labels, output_shape", [
    ("resunet3d", ("background", "liver"), (1, 2, 32, 32, 32)),
    ("resunet3d_tiny", PHANTOM_LABELS, (1, 4, 32, 32, 32)),
    ("resnet3d_18", ("a", "b"), (1, 2)),
    ("resnet3d_50", ("a",), (1, 1)),
    ("resnet3d_tiny", ("a",), (1, 1)),
])
def test_forward_shapes_follow_the_card(name, labels, output_shape):
    model = create_model(name, labels=labels).eval()
    assert model.card.spatial_dims == 3 and model.card.spacing is not None
    with torch.no_grad():
        assert tuple(model(torch.zeros(1, 1, 32, 32, 32)).shape) == output_shape


def test_checkpoint_round_trip_keeps_the_volume_card(untrained_checkpoint):
    model = load_checkpoint(untrained_checkpoint)
    assert model.card.spacing == (4.0, 4.0, 5.0) and model.card.normalization == CT_NORMALIZATION
    assert model.card.labels == PHANTOM_LABELS and model.card.mirror_axes == (0, 1, 2)


def test_segment_image_survives_an_injected_gpu_out_of_memory(monkeypatch, untrained_checkpoint, phantoms):
    """A fake GPU: the first two attempts on 'cuda' run out of memory, then it halves to 1 and finishes there."""
    real_windows, attempts = segment_labels.sliding_window_logits, []

    def windows_on_a_small_gpu(model, volume, roi, device, batch, *args, **kwargs):
        attempts.append((device.type, batch))
        if device.type == "cuda" and batch > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_windows(model, volume, roi, torch.device("cpu"), batch, *args, **kwargs)

    monkeypatch.setattr(segment_labels, "place_model", lambda model, device: None)
    monkeypatch.setattr(segment_labels, "sliding_window_logits", windows_on_a_small_gpu)
    model = load_checkpoint(untrained_checkpoint)
    image = read_image(load_volume_dataset(phantoms).training[0].images[0])
    result = segment_image(model, image, SlidingWindowSettings(device="cuda", sw_batch_size=4, precision="fp32"))
    assert attempts == [("cuda", 4), ("cuda", 2), ("cuda", 1)]
    assert len(result.notes) == 2 and "out of cuda memory" in result.notes[0]
    assert np.asarray(result).shape == image.spatial_shape and result.labels.dtype == np.uint8


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_labels_on_the_models_own_grid_are_the_argmax_of_the_probabilities(phantoms, precision):
    """Nothing to resample: the labels come from the logits directly, and equal the probabilities' argmax."""
    image = read_image(load_volume_dataset(phantoms).training[0].images[0])
    torch.manual_seed(1)
    model = create_model("resunet3d_tiny", labels=PHANTOM_LABELS, spacing=tuple(image.spacing),
                         normalization=CT_NORMALIZATION).eval()
    prepared = prepare_volume(image.array, image.affine, model.card)
    assert on_same_grid(prepared.array.shape[1:], prepared.affine, image.spatial_shape, image.affine)
    labels = segment_image(model, image, SlidingWindowSettings(precision=precision)).labels

    logits = sliding_window_logits(model, torch.from_numpy(prepared.array), model.card.input_size,
                                   torch.device("cpu"), 4, 0.5, precision)
    probabilities = torch.softmax(logits, dim=0)
    expected = probabilities_to_labels(probabilities, prepared.affine, image.affine, image.spatial_shape)
    assert len(np.unique(expected)) > 1
    chosen = torch.from_numpy(labels.astype(np.int64))[None]
    wanted = torch.from_numpy(expected.astype(np.int64))[None]
    # the same label, or a tie of the probabilities (which the two orders of rounding may break differently)
    assert torch.equal(probabilities.gather(0, chosen), probabilities.gather(0, wanted))
    assert np.mean(labels == expected) > 0.9999


def test_segment_cli_writes_on_the_input_grid_of_a_non_ras_nifti(untrained_checkpoint, phantoms, tmp_path, capsys):
    source = load_volume_dataset(phantoms).training[1].images[0]  # stored LPS
    assert "".join(nib.aff2axcodes(nib.load(source).affine)) == "LPS"
    assert main(["segment", str(source), "--checkpoint", str(untrained_checkpoint), "--out", str(tmp_path),
                 "--sw-batch-size", "2", "--tta"]) == 0
    assert "volumes:" in capsys.readouterr().out
    written, original = nib.load(tmp_path / "segmentation.nii.gz"), nib.load(source)
    assert np.array_equal(written.affine, original.affine) and written.shape == original.shape
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(written.header.get_qform(), original.header.get_qform())
    summary = (tmp_path / "volumes.json").read_text()
    assert "label_volumes_ml" in summary and "liver" in summary


def test_segment_cli_refuses_bad_requests(untrained_checkpoint, phantoms, tmp_path, capsys):
    source = load_volume_dataset(phantoms).training[0].images[0]
    assert main(["segment", str(source), "--checkpoint", str(untrained_checkpoint), "--out", str(tmp_path),
                 "--dicom-seg"]) == 2
    assert "needs a DICOM series folder" in capsys.readouterr().err
    classifier = save_checkpoint(create_model("resnet3d_tiny"), tmp_path / "vol.safetensors")
    assert main(["segment", str(source), "--checkpoint", str(classifier), "--out", str(tmp_path)]) == 2
    assert "segmentation checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["segment"], ["train", "seg"], ["train", "vol"], ["eval", "seg"]])
def test_help(command):
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0


def test_train_seg_refuses_a_patch_the_unet_cannot_halve(phantoms, tmp_path, capsys):
    assert main(["train", "seg", "--data", str(phantoms), "--out", str(tmp_path), "--model", "resunet3d_tiny",
                 "--patch", "50", "48", "32", "--no-progress"]) == 2
    assert "must be a multiple of 8" in capsys.readouterr().err
    assert main(["train", "seg", "--data", str(phantoms), "--out", str(tmp_path), "--mirror-axes", "3"]) == 2
    assert "--mirror-axes" in capsys.readouterr().err


def test_train_seg_takes_the_plateau_schedule_on_request(phantoms, tmp_path):
    assert main(["train", "seg", "--data", str(phantoms), "--out", str(tmp_path), "--model", "resunet3d_tiny",
                 "--epochs", "1", "--patches-per-epoch", "2", "--lr-schedule", "plateau", "--no-progress"]) == 0
    loop = json.loads((tmp_path / "config.json").read_text())["loop"]
    assert (loop["lr_schedule"], loop["plateau_factor"], loop["plateau_patience"]) == ("plateau", 0.5, 5)
