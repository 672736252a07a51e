"""Published state-dict layouts -> medres's (MONAI's) key names, and which registry model a layout is.

* torchvision and timm ResNets (``resnet50/101/152``, ``wide_resnet50_2``) and
  torchxrayvision's ResNet-50 use the key names of medres's MONAI ResNets
  already (the classifiers keep torchvision's stem and bias-free shortcuts).
* DenseNet-121 (torchvision, timm, torchxrayvision) differs in two places:
  MONAI nests a dense layer's modules under ``layers``
  (``denselayer1.layers.norm1.weight`` for ``denselayer1.norm1.weight``) and
  names the classifier ``class_layers.out``. torchvision's published file
  still uses the legacy names ``denselayer1.norm.1.weight``; both are read.
* MedicalNet files hold ``{"state_dict": ...}`` saved from ``nn.DataParallel``:
  keys carry a ``module.`` prefix, which is removed as MONAI's
  ``resnet*(pretrained=True)`` removes it, and the segmentation head
  ``conv_seg`` is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from medres.errors import CheckpointMismatchError, UsageError

_LEGACY_DENSE_LAYER_KEY = re.compile(r"^(.*\.denselayer\d+)\.(norm|relu|conv)\.([12])\.(.+)$")
_DENSE_LAYER_KEY = re.compile(r"^(.*\.denselayer\d+)\.((?:norm|conv)[12])\.(.+)$")
_DENSENET_HEAD = "classifier."
_MONAI_DENSENET_HEAD = "class_layers.out."
_MEDICALNET_PREFIX = "module."
_MEDICALNET_HEAD = "conv_seg."
DENSENET121_BLOCKS = (6, 12, 24, 16)
RESNET_DEPTH_BY_BLOCKS: dict[tuple[int, ...], str] = {
    (3, 4, 6, 3): "50", (3, 4, 23, 3): "101", (3, 8, 36, 3): "152", (2, 2, 2, 2): "18",
}
PREACT_EXPLANATION = (
    "timm's resnetv2_50 (a pre-activation ResNet-50) does not fit chexnet_preact_resnet50: its stem is a bare "
    "convolution and max pooling, while chexnet_preact_resnet50 keeps MONAI's stem with a batch norm and ReLU "
    "after that convolution, which no choice of weights can make the identity (a ReLU drops what timm's first "
    "block normalises). The tensors could be made to load, but the network would compute something else"
)


def densenet_to_medres(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision/timm/torchxrayvision DenseNet keys (legacy ones too) -> MONAI ``DenseNet121`` keys."""
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        legacy = _LEGACY_DENSE_LAYER_KEY.match(key)
        if legacy:
            key = f"{legacy[1]}.{legacy[2]}{legacy[3]}.{legacy[4]}"
        layer = _DENSE_LAYER_KEY.match(key)
        if layer:
            key = f"{layer[1]}.layers.{layer[2]}.{layer[3]}"
        elif key.startswith(_DENSENET_HEAD):
            key = _MONAI_DENSENET_HEAD + key[len(_DENSENET_HEAD):]
        renamed[key] = tensor
    return renamed


def medicalnet_to_medres(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MedicalNet keys (``module.layer1.0.conv1.weight``) -> MONAI 3D ResNet keys, without ``conv_seg``."""
    stripped = {key.removeprefix(_MEDICALNET_PREFIX): tensor for key, tensor in state.items()}
    return {key: tensor for key, tensor in stripped.items() if not key.startswith(_MEDICALNET_HEAD)}


def to_medres_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout -> medres's key names (ResNet layouts are medres's already)."""
    if any(key.startswith(_MEDICALNET_PREFIX) for key in state):
        state = medicalnet_to_medres(state)
    if any(".denselayer" in key for key in state):
        return densenet_to_medres(state)
    return dict(state)


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """The registry model whose layers a state dict in medres's key names fills.

    Raises:
        UsageError: A pre-activation ResNet from timm (see :data:`PREACT_EXPLANATION`).
        CheckpointMismatchError: Not a DenseNet-121 or one of the registered ResNets.
    """
    if "stem.conv.weight" in state or any(key.startswith("stages.") for key in state):
        raise UsageError(PREACT_EXPLANATION)
    if any(".denselayer" in key for key in state):
        blocks = _densenet_blocks(state)
        if blocks != DENSENET121_BLOCKS:
            raise CheckpointMismatchError(f"a DenseNet with {blocks} layers per block is not DenseNet-121 "
                                          f"{DENSENET121_BLOCKS}, the only DenseNet medres registers")
        return "chexnet_densenet121"
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        return _resnet_name(state)
    raise CheckpointMismatchError("the tensors are neither a DenseNet-121 nor a ResNet laid out as torchvision's, "
                                  "timm's or MedicalNet's")


def _densenet_blocks(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    layers_per_block: dict[int, set[int]] = {}
    for key in state:
        found = re.search(r"denseblock(\d+)\.denselayer(\d+)\.", key)
        if found:
            layers_per_block.setdefault(int(found[1]), set()).add(int(found[2]))
    return tuple(len(layers_per_block[block]) for block in sorted(layers_per_block))


def _resnet_name(state: Mapping[str, torch.Tensor]) -> str:
    blocks = tuple(len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")})
                   for stage in (1, 2, 3, 4))
    depth = RESNET_DEPTH_BY_BLOCKS.get(blocks)
    bottleneck = "layer1.0.conv3.weight" in state
    volumetric = state["conv1.weight"].dim() == 5
    if volumetric and (depth, bottleneck) in (("18", False), ("50", True)):
        return f"resnet3d_{depth}"
    if not volumetric and bottleneck and depth in ("50", "101", "152"):
        wide = state["layer1.0.conv1.weight"].shape[0] == 128
        if not wide:
            return f"chexnet_resnet{depth}"
        if depth == "50":
            return "chexnet_wide_resnet50"
    kind = "3D" if volumetric else "2D"
    raise CheckpointMismatchError(f"a {kind} ResNet with {blocks} blocks per stage matches no registered model "
                                  "(2D: ResNet-50/101/152, Wide ResNet-50-2; 3D: MedicalNet ResNet-18/50)")
