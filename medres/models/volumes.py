"""3D models: the residual U-Net for segmentation ("seg") and ResNet volume classifiers ("vol").

Segmentation networks output one logit channel per card label, background
first (softmax, the card's ``output_activation`` for ``seg``, belongs to the
loss and to inference). Classifiers output one logit per volume-level label
(sigmoid, the card's ``output_activation`` for ``vol``, in the loss and in
inference). Both cards default to ``mirror_axes=(0, 1, 2)``; training records
the axes it mirrored.

The card's ``spacing`` and ``normalization`` are placeholders here; training
replaces them with the data set's fingerprint (median spacing, CT foreground
percentiles), and checkpoints carry the trained card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from medres.models.card import ModelCard
from medres.models.networks import ResidualUNet, ResNet, ResNetBlock, ResNetBottleneck
from medres.models.registry import attach_card, register_model

DEFAULT_SEG_LABELS: tuple[str, ...] = ("background", "foreground")
DEFAULT_VOLUME_LABELS: tuple[str, ...] = ("abnormal",)
DEFAULT_SPACING_MM: tuple[float, float, float] = (1.5, 1.5, 1.5)


def _volume_card(name: str, task: str, labels: tuple[str, ...], input_size: tuple[int, int, int],
                 overrides: dict[str, Any], gradcam_layer: str = "") -> ModelCard:
    """The default card of a 3D model, with caller overrides (channels get one z-score entry each)."""
    in_channels = int(overrides.get("in_channels", 1))
    default = ModelCard(
        name=name, task=task, labels=labels, in_channels=in_channels, spatial_dims=3, input_size=input_size,
        spacing=DEFAULT_SPACING_MM, gradcam_layer=gradcam_layer,
        normalization={"kind": "per_channel", "channels": [{"kind": "zscore_per_image"}] * in_channels},
    )
    return default.with_overrides(**overrides)


def _residual_unet(card: ModelCard, channels: Sequence[int], num_res_units: int) -> ResidualUNet:
    """MONAI's ``UNet(norm="instance")`` with stride-2 levels, as :mod:`medres.models.networks` builds it."""
    return ResidualUNet(spatial_dims=3, in_channels=card.in_channels, out_channels=len(card.labels),
                        channels=tuple(channels), strides=(2,) * (len(channels) - 1), num_res_units=num_res_units)


@register_model(task="seg")
def resunet3d(**overrides: Any) -> nn.Module:
    """Residual 3D U-Net: MONAI ``UNet(channels=(16..256), strides=2, num_res_units=2)``, 4.8M parameters.

    Why MONAI's ``UNet`` and not ``DynUNet(res_block=True)``: with the same
    filters (16..256) and a 96^3 patch, ``DynUNet`` is several times slower on
    a CPU, because ``UNet`` downsamples in its first residual unit while
    ``DynUNet`` (nnU-Net's layout) runs two full-resolution convolutions first.
    Inference is sliding-window over whole CT volumes, so that factor is what
    a user waits for. ``DynUNet``'s per-axis kernels and strides would suit very
    anisotropic data, but volumes are resampled to the card's spacing first.
    Instance normalisation (as nnU-Net) because batches are 2 patches.
    Input patch 96^3; volumes must be padded to multiples of 16 (sliding
    window does this).
    """
    card = _volume_card("resunet3d", "seg", DEFAULT_SEG_LABELS, (96, 96, 96), overrides)
    return attach_card(_residual_unet(card, (16, 32, 64, 128, 256), num_res_units=2), card)


@register_model(task="seg")
def resunet3d_tiny(**overrides: Any) -> nn.Module:
    """A 4-level residual U-Net with 8..64 filters (~0.15M parameters) for tests; patch 48x48x32.

    Same architecture family as :func:`resunet3d` (MONAI ``UNet``, one residual
    unit per level), small enough to train on synthetic phantoms in CPU minutes.
    """
    card = _volume_card("resunet3d_tiny", "seg", DEFAULT_SEG_LABELS, (48, 48, 32), overrides)
    return attach_card(_residual_unet(card, (8, 16, 32, 64), num_res_units=1), card)


def _medicalnet_resnet(card: ModelCard, block: type[nn.Module], layers: Sequence[int],
                       widths: Sequence[int], shortcut_type: str, bias_downsample: bool) -> ResNet:
    """A 3D ResNet (MONAI's layout) with MedicalNet's stem (7^3 stride-2 convolution, max pooling).

    Shortcut type and projection bias follow MONAI's
    ``get_medicalnet_pretrained_resnet_args`` (A for 18/34, B without bias for
    50+), so converted MedicalNet weights load with ``--init`` (non-strict,
    for the new ``fc`` head).
    """
    return ResNet(block=block, layers=list(layers), block_inplanes=list(widths), spatial_dims=3,
                  n_input_channels=card.in_channels, conv1_t_size=7, conv1_t_stride=2,
                  shortcut_type=shortcut_type, bias_downsample=bias_downsample, num_classes=len(card.labels))


@register_model(task="vol")
def resnet3d_18(**overrides: Any) -> nn.Module:
    """3D ResNet-18 (MedicalNet layout) volume classifier, 33M parameters; input 128^3 at 1.5 mm.

    Grad-CAM layer ``layer4`` (its last block's in-place ReLU finishes before it returns).
    """
    card = _volume_card("resnet3d_18", "vol", DEFAULT_VOLUME_LABELS, (128, 128, 128), overrides, "layer4")
    network = _medicalnet_resnet(card, ResNetBlock, (2, 2, 2, 2), (64, 128, 256, 512), "A", True)
    return attach_card(network, card)


@register_model(task="vol")
def resnet3d_50(**overrides: Any) -> nn.Module:
    """3D ResNet-50 (MedicalNet layout) volume classifier, 46M parameters; input 128^3 at 1.5 mm.

    Grad-CAM layer ``layer4`` (as for ResNet-18).
    """
    card = _volume_card("resnet3d_50", "vol", DEFAULT_VOLUME_LABELS, (128, 128, 128), overrides, "layer4")
    network = _medicalnet_resnet(card, ResNetBottleneck, (3, 4, 6, 3), (64, 128, 256, 512), "B", False)
    return attach_card(network, card)


@register_model(task="vol")
def resnet3d_tiny(**overrides: Any) -> nn.Module:
    """A one-block-per-stage 3D ResNet with 8..64 filters for tests; input 48x48x32."""
    card = _volume_card("resnet3d_tiny", "vol", DEFAULT_VOLUME_LABELS, (48, 48, 32), overrides, "layer4")
    network = _medicalnet_resnet(card, ResNetBlock, (1, 1, 1, 1), (8, 16, 32, 64), "B", False)
    return attach_card(network, card)
