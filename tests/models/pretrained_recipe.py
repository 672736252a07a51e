"""Published-weight files made from the reference recipe, for tests outside tests/models/test_pretrained.py.

The recipe, the torchxrayvision-named module classes and the pickling as a release file are those of
tests/models/test_pretrained.py (imported, not copied); this module only writes the files other tests
need: a torchvision ImageNet file as torchvision names it in the torch hub cache, and the NIH release
imported into a medres checkpoint by the real ``medres import-weights`` command.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medres.cli.main import main
from medres.models.pretrained import PUBLISHED_MODELS
from tests.models.test_pretrained import (
    NIH,
    DenseNet,
    read_reference,
    recipe_state_dict,
    save_as_torchxrayvision_module,
)


def torchvision_recipe(architecture: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The recipe state dict of a torchvision architecture (``resnet50`` ...) and its reference tensors."""
    tensors, metadata = read_reference(f"torchvision_{architecture}.safetensors")
    return recipe_state_dict(metadata["state_dict"]), tensors


def write_torchvision_file(architecture: str, path: Path) -> dict[str, torch.Tensor]:
    """The recipe weights saved as torchvision publishes them (a plain state-dict ``.pth``); returns them."""
    state, _ = torchvision_recipe(architecture)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def nih_release_file(folder: Path) -> Path:
    """The recipe NIH model pickled as torchxrayvision's release file is, under the release file's name."""
    _, metadata = read_reference(f"torchxrayvision_{NIH}.safetensors")
    module = DenseNet()
    module.load_state_dict(recipe_state_dict(metadata["state_dict"]), strict=True)
    path = folder / PUBLISHED_MODELS[NIH].release_file
    folder.mkdir(parents=True, exist_ok=True)
    save_as_torchxrayvision_module(module, path)
    return path


def nih_checkpoint(folder: Path) -> Path:
    """``medres import-weights RELEASE --from torchxrayvision --out folder/nih.safetensors``; the checkpoint."""
    out = folder / "nih.safetensors"
    assert main(["import-weights", str(nih_release_file(folder / "release")), "--from", "torchxrayvision",
                 "--out", str(out)]) == 0
    return out
