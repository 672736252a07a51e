"""Safetensors checkpoints: round trips, atomic writes, and refusal of pickles and damaged files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from medres.errors import (
    CheckpointMismatchError,
    CorruptError,
    InvalidModelCardError,
    NotFoundError,
    NotSafetensorsError,
    TruncatedError,
    UnknownModelError,
    UnsafeCheckpointError,
    UsageError,
)
from medres.models import (
    ModelCard,
    checkpoint_sha256,
    create_model,
    load_checkpoint,
    load_weights,
    read_card,
    save_checkpoint,
    write_safetensors_atomically,
)
from medres.models.checkpoint import CHECKPOINT_FORMAT, check_safetensors_file

TINY_INPUT_SHAPE = (2, 1, 64, 64)
LOADERS = {
    "load_checkpoint": load_checkpoint,
    "read_card": read_card,
    "load_weights": lambda path: load_weights(create_model("chexnet_tiny"), path),
}


class CreatesMarkerWhenUnpickled:
    """A pickle payload: unpickling it calls ``open(marker_path, "w")``, creating the file."""

    def __init__(self, marker_path: Path):
        self.marker_path = marker_path

    def __reduce__(self):
        return open, (str(self.marker_path), "w")


@pytest.fixture
def trained_tiny_model() -> nn.Module:
    """A tiny model whose weights and BatchNorm statistics differ from a fresh one."""
    torch.manual_seed(0)
    model = create_model("chexnet_tiny")
    with torch.no_grad():
        model.train()(torch.rand(*TINY_INPUT_SHAPE))  # moves the running statistics
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return model.eval()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    return torch.rand(*TINY_INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def saved_checkpoint(tmp_path, trained_tiny_model) -> Path:
    return save_checkpoint(trained_tiny_model, tmp_path / "tiny.safetensors")


def outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


def test_round_trip_gives_identical_outputs_and_card(saved_checkpoint, trained_tiny_model, tiny_input):
    loaded = load_checkpoint(saved_checkpoint)
    assert not loaded.training
    assert loaded.card == trained_tiny_model.card
    assert torch.equal(outputs(loaded, tiny_input), outputs(trained_tiny_model, tiny_input))
    assert next(loaded.parameters()).device == torch.device("cpu")


def test_card_with_trained_thresholds_and_metadata_is_preserved(tmp_path, trained_tiny_model):
    card = dataclasses.replace(
        trained_tiny_model.card, thresholds={"Effusion": 0.31}, training_data_fingerprint="sha256:0123"
    )
    path = save_checkpoint(trained_tiny_model, tmp_path / "run" / "best.safetensors", card, {"epoch": "7"})
    assert read_card(path) == card and load_checkpoint(path).card == card
    assert load_checkpoint(path).card.thresholds["Effusion"] == 0.31
    with safe_open(str(path), framework="pt") as stored:
        metadata = stored.metadata()
    assert metadata["format"] == CHECKPOINT_FORMAT and metadata["epoch"] == "7"


def test_architecture_follows_the_stored_card(tmp_path, tiny_input):
    model = create_model("chexnet_tiny", labels=("Effusion", "Edema", "Mass"))
    path = save_checkpoint(model, tmp_path / "three.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.card.labels == ("Effusion", "Edema", "Mass")
    assert torch.equal(outputs(loaded, tiny_input), outputs(model, tiny_input))


@pytest.mark.parametrize(
    "extra_metadata, message", [({"format": "x"}, "reserved"), ({"epoch": 7}, "must be strings")]
)
def test_bad_extra_metadata_is_refused(tmp_path, trained_tiny_model, extra_metadata, message):
    with pytest.raises(UsageError, match=message):
        save_checkpoint(trained_tiny_model, tmp_path / "x.safetensors", extra_metadata=extra_metadata)
    assert list(tmp_path.iterdir()) == []


def test_a_header_length_whose_first_byte_looks_like_a_pickle_still_loads(tmp_path, trained_tiny_model, tiny_input):
    """A header 128 bytes past a multiple of 256 makes the file start with 0x80, a pickle's first byte."""
    for padding in range(256):
        path = save_checkpoint(trained_tiny_model, tmp_path / "x.safetensors", extra_metadata={"note": "x" * padding})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length whose low byte is 0x80")
    assert torch.equal(outputs(load_checkpoint(path), tiny_input), outputs(trained_tiny_model, tiny_input))


def test_saving_needs_a_card(tmp_path):
    with pytest.raises(UsageError, match="model card"):
        save_checkpoint(nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_write_is_atomic_and_leaves_no_temporary_file(saved_checkpoint):
    assert [path.name for path in saved_checkpoint.parent.iterdir()] == [saved_checkpoint.name]


def test_crash_before_rename_keeps_the_previous_checkpoint(
    monkeypatch, saved_checkpoint, trained_tiny_model, tiny_input
):
    expected = outputs(trained_tiny_model, tiny_input)
    digest_before = checkpoint_sha256(saved_checkpoint)

    def crash(*_args, **_kwargs):
        raise OSError("simulated crash during os.replace")

    monkeypatch.setattr(os, "replace", crash)
    with torch.no_grad():
        trained_tiny_model.fc.weight.add_(1.0)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(trained_tiny_model, saved_checkpoint)
    monkeypatch.undo()

    assert [path.name for path in saved_checkpoint.parent.iterdir()] == [saved_checkpoint.name]
    assert checkpoint_sha256(saved_checkpoint) == digest_before
    assert torch.equal(outputs(load_checkpoint(saved_checkpoint), tiny_input), expected)


@pytest.mark.parametrize("loader_name", sorted(LOADERS))
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("file_name", ["model.pt", "model.safetensors"])
def test_pickle_is_refused_before_anything_unpickles_it(tmp_path, monkeypatch, loader_name, protocol, file_name):
    marker = tmp_path / "unpickled.marker"
    payload = pickle.dumps(CreatesMarkerWhenUnpickled(marker), protocol=protocol)
    _prove_payload_works(protocol, tmp_path / "proof.marker")
    checkpoint = tmp_path / file_name
    checkpoint.write_bytes(payload)
    monkeypatch.setattr(torch, "load", _forbidden)
    monkeypatch.setattr(pickle, "loads", _forbidden)
    monkeypatch.setattr(pickle, "load", _forbidden)

    with pytest.raises(UnsafeCheckpointError, match="weights_only=True") as caught:
        LOADERS[loader_name](checkpoint)
    assert caught.value.reason == "unsafe_checkpoint"
    assert "can run code when loaded" in str(caught.value) and str(checkpoint) in str(caught.value)
    assert "README" in str(caught.value) and len(caught.value.detail) < 250  # one short sentence and its fix
    assert not marker.exists()


def _prove_payload_works(protocol: int, proof_marker: Path) -> None:
    """The test only means something if such a payload really acts when unpickled."""
    pickle.loads(pickle.dumps(CreatesMarkerWhenUnpickled(proof_marker), protocol=protocol)).close()
    assert proof_marker.exists()


def _forbidden(*_args, **_kwargs):
    raise AssertionError("a checkpoint loader must never unpickle")


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_files_are_refused(tmp_path, trained_tiny_model, zip_format):
    path = tmp_path / "model.pth"
    torch.save(trained_tiny_model.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match="torch.save zip" if zip_format else "Python pickle"):
        load_checkpoint(path)


@pytest.mark.parametrize(("content", "looks_like"), [
    (b"these are not weights, just some text\n", "a text file"),
    (b"notes\n", "a text file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "no safetensors header"),
])
@pytest.mark.parametrize("loader_name", sorted(LOADERS))
def test_other_content_is_refused_in_one_line_as_not_safetensors(tmp_path, content, looks_like, loader_name):
    path = tmp_path / "notes.safetensors"
    path.write_bytes(content)
    with pytest.raises(NotSafetensorsError, match=f"not a safetensors checkpoint \\({looks_like}\\)") as caught:
        LOADERS[loader_name](path)
    assert caught.value.reason == "not_safetensors" and str(path) in str(caught.value)
    assert "pickle" not in str(caught.value) and len(caught.value.one_line()) < 250 + len(str(path))


def test_check_safetensors_file_reads_only_the_header(tmp_path, saved_checkpoint, monkeypatch):
    import medres.models.checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "load_file", _forbidden)  # the tensors are never read
    check_safetensors_file(saved_checkpoint)
    (tmp_path / "notes.txt").write_text("not weights\n")
    with pytest.raises(NotSafetensorsError):
        check_safetensors_file(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError):
        check_safetensors_file(tmp_path / "model.pt")


def test_same_model_and_card_give_byte_identical_files(tmp_path, trained_tiny_model):
    """The safetensors library orders its metadata differently on every write; the file must not change."""
    card = dataclasses.replace(trained_tiny_model.card, thresholds={"Effusion": 0.31, "Atelectasis": 0.2})
    extra = {"epoch": "3", "score": "0.71", "global_step": "120", "metrics": '{"auroc": 0.7}'}
    digests = {
        checkpoint_sha256(save_checkpoint(trained_tiny_model, tmp_path / f"{index}.safetensors", card,
                                          dict(reversed(extra.items())) if index % 2 else extra))
        for index in range(6)
    }
    assert len(digests) == 1
    content = (tmp_path / "0.safetensors").read_bytes()
    header_length = int.from_bytes(content[:8], "little")
    header_text = content[8:8 + header_length].decode().rstrip(" ")
    header = json.loads(header_text)
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(header["__metadata__"])
    assert header_text == json.dumps(header, sort_keys=True, separators=(",", ":"))
    assert header_length % 8 == 0 and read_card(tmp_path / "0.safetensors") == card


def test_tensor_and_metadata_order_do_not_change_the_bytes(tmp_path):
    tensors = {"b": torch.ones(3), "a": torch.zeros(2, dtype=torch.float64), "c": torch.arange(4)}
    metadata = {"step": "3", "epoch": "1", "seed": "0"}
    first = write_safetensors_atomically(tmp_path / "first.safetensors", tensors, metadata)
    second = write_safetensors_atomically(tmp_path / "second.safetensors", dict(reversed(tensors.items())),
                                          dict(reversed(metadata.items())))
    assert first.read_bytes() == second.read_bytes()


def test_safetensors_content_loads_whatever_the_extension(tmp_path, saved_checkpoint):
    renamed = tmp_path / "weights.pt"
    renamed.write_bytes(saved_checkpoint.read_bytes())
    assert load_checkpoint(renamed).card.name == "chexnet_tiny"


@pytest.mark.parametrize("kept_fraction", [0.0, 0.001, 0.02, 0.5, 0.999])
@pytest.mark.parametrize("loader_name", sorted(LOADERS))
def test_truncated_checkpoint_fails_with_a_reason(tmp_path, saved_checkpoint, kept_fraction, loader_name):
    content = saved_checkpoint.read_bytes()
    truncated = tmp_path / "half_written.safetensors"
    truncated.write_bytes(content[: int(len(content) * kept_fraction)])
    with pytest.raises(TruncatedError, match="bytes") as caught:
        LOADERS[loader_name](truncated)
    assert caught.value.reason == "truncated"


def test_trailing_garbage_is_corrupt(tmp_path, saved_checkpoint):
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(saved_checkpoint.read_bytes() + b"\0" * 16)
    with pytest.raises(CorruptError):
        load_checkpoint(damaged)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_bare_state_dict_has_no_card_but_loads_with_load_weights(tmp_path, trained_tiny_model, tiny_input):
    path = tmp_path / "bare.safetensors"
    save_file({key: value.contiguous() for key, value in trained_tiny_model.state_dict().items()}, path)
    with pytest.raises(InvalidModelCardError, match="load_weights"):
        load_checkpoint(path)
    fresh = create_model("chexnet_tiny")
    assert load_weights(fresh, path).is_exact
    assert torch.equal(outputs(fresh, tiny_input), outputs(trained_tiny_model, tiny_input))


def test_card_naming_an_unregistered_model_is_refused(tmp_path, trained_tiny_model):
    card = dataclasses.replace(trained_tiny_model.card, name="chexnet_from_the_future")
    path = save_checkpoint(trained_tiny_model, tmp_path / "future.safetensors", card)
    with pytest.raises(UnknownModelError, match="chexnet_tiny") as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("stored_revision", "advice"), [(1, "retrain with this medres"), (3, "upgrade medres")])
def test_weights_for_another_architecture_revision_are_refused(tmp_path, trained_tiny_model, stored_revision,
                                                               advice):
    """chexnet_tiny revision 1 (stride 32, average pooling) had the same tensors: its weights must not load silently."""
    card = dataclasses.replace(trained_tiny_model.card, architecture_revision=stored_revision)
    path = save_checkpoint(trained_tiny_model, tmp_path / "other_revision.safetensors", card)
    expected = f"revision {stored_revision} of 'chexnet_tiny'.*{advice}"
    with pytest.raises(CheckpointMismatchError, match=expected) as caught:
        load_checkpoint(path)
    assert caught.value.reason == "checkpoint_mismatch" and str(path) in str(caught.value)
    assert read_card(path).architecture_revision == stored_revision  # the card itself still reads


def test_cards_written_before_revisions_existed_are_revision_1(trained_tiny_model):
    assert trained_tiny_model.card.architecture_revision == 2
    assert create_model("resunet3d_tiny").card.architecture_revision == 1
    data = json.loads(trained_tiny_model.card.to_json())
    del data["architecture_revision"]
    assert ModelCard.from_json(json.dumps(data)).architecture_revision == 1
    with pytest.raises(InvalidModelCardError, match="architecture_revision"):
        ModelCard.from_json(json.dumps({**data, "architecture_revision": 0}))
    with pytest.raises(UsageError, match="architecture_revision"):
        create_model("chexnet_tiny", architecture_revision=1)


def test_strict_load_weights_lists_every_mismatch_at_once(tmp_path, trained_tiny_model):
    state = {key: value.clone() for key, value in trained_tiny_model.state_dict().items()}
    del state["layer1.0.conv1.weight"]
    state["fc.weight"] = torch.zeros(5, 64)
    state["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "mismatched.safetensors"
    save_file(state, path)
    model = create_model("chexnet_tiny")

    with pytest.raises(CheckpointMismatchError) as caught:
        load_weights(model, path)
    message = str(caught.value)
    assert caught.value.reason == "checkpoint_mismatch"
    assert "layer1.0.conv1.weight" in message and "head.extra.weight" in message
    assert "fc.weight checkpoint (5, 64) vs model (14, 64)" in message
    assert not torch.equal(model.conv1.weight, state["conv1.weight"]), "a failed strict load must change nothing"

    report = load_weights(model, path, strict=False)
    assert report.missing_keys == ("layer1.0.conv1.weight",) and report.unexpected_keys == ("head.extra.weight",)
    assert report.shape_mismatches == (("fc.weight", (5, 64), (14, 64)),)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.fc.bias, state["fc.bias"])


class TiedAndViewedTensors(nn.Module):
    """Weight tying plus two buffers that are views into one storage."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight
        storage = torch.arange(6.0)
        self.register_buffer("first_half", storage[:3])
        self.register_buffer("second_half", storage[3:])


def test_shared_tensors_are_saved_once_and_restored(tmp_path, trained_tiny_model):
    torch.manual_seed(0)
    model = TiedAndViewedTensors()
    model.second_half.fill_(7.0)
    path = save_checkpoint(model, tmp_path / "tied.safetensors", card=trained_tiny_model.card)
    with safe_open(str(path), framework="pt") as stored:
        assert "decoder.weight" not in stored.keys() and "encoder.weight" in stored.keys()
        assert "medres_aliases" in stored.metadata()
    fresh = TiedAndViewedTensors()
    assert load_weights(fresh, path).is_exact
    assert torch.equal(fresh.decoder.weight, model.encoder.weight)
    assert torch.equal(fresh.first_half, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(fresh.second_half, torch.full((3,), 7.0))


def test_checkpoint_sha256_hashes_the_file_bytes(saved_checkpoint):
    assert checkpoint_sha256(saved_checkpoint) == hashlib.sha256(saved_checkpoint.read_bytes()).hexdigest()


def test_checkpoint_format_from_a_newer_medres_is_refused_with_advice(tmp_path, trained_tiny_model):
    path = tmp_path / "v2.safetensors"
    metadata = {"format": "medres-checkpoint-v2", "medres_card": trained_tiny_model.card.to_json()}
    save_file({"weight": torch.zeros(2)}, path, metadata=metadata)
    with pytest.raises(InvalidModelCardError, match="upgrade medres"):
        read_card(path)


def test_write_safetensors_atomically_stores_shared_and_strided_tensors_in_full(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    tensors = {"whole": base, "first_row": base[0], "transposed": base.t()}
    path = write_safetensors_atomically(tmp_path / "state" / "resume.safetensors", tensors, {"step": "3"})
    assert [entry.name for entry in path.parent.iterdir()] == ["resume.safetensors"]
    with safe_open(str(path), framework="pt") as stored:
        assert stored.metadata() == {"step": "3"}
        assert all(torch.equal(stored.get_tensor(name), tensor) for name, tensor in tensors.items())
