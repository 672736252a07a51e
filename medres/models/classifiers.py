"""CheXNet-style 2D chest X-ray classifiers: 1 grayscale channel in, 14 logits out.

Every network is laid out as MONAI's ``DenseNet121`` or ``ResNet`` (built by
:mod:`medres.models.networks`, which imports no MONAI); the only layers
written here are the two bottleneck variants MONAI lacks (wide and
pre-activation). Outputs are logits in :data:`CXR14_LABELS` order: the sigmoid
(the card's default ``output_activation`` for ``cxr``) belongs to the loss and
to inference, not to the model.

ResNets use a stride-2 7x7 stem like torchvision and CheXNet (MONAI's default
stride 1 costs 4x the FLOPs at 224x224) and bias-free shortcut projections, so
their state-dict keys and shapes match torchvision's ResNets (apart from the
1-channel ``conv1`` and the 14-way ``fc``).

Grad-CAM and in-place operations: a hook on ``card.gradcam_layer`` must see a
tensor that nothing modifies in place afterwards, or the stored activation
changes under it and ``register_full_backward_hook`` raises. Each factory's
docstring says how its layer's output is produced. Never hook a ResNet block's
``act`` module: the blocks call that one ReLU module two or three times per block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medres.models.card import CXR14_LABELS, IMAGENET_GRAY_NORMALIZATION, ModelCard
from medres.models.networks import (
    ADAPTIVE_MAX_POOL,
    BATCH_NORM,
    CONV,
    ResNet,
    ResNetBlock,
    ResNetBottleneck,
    Shortcut,
    densenet121,
    relu,
)
from medres.models.registry import attach_card, register_model

DEFAULT_CXR_MODEL = "chexnet_resnet50"
RESNET_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)


class WideResNetBottleneck(ResNetBottleneck):
    """The bottleneck with the inner 1x1 and 3x3 convolutions ``width_factor`` times wider.

    This is Wide ResNet-50-2 as torchvision builds it: the inner width doubles
    (64 -> 128 in stage 1) while the block output keeps ResNet-50's
    ``planes * 4`` channels. MONAI's ``widen_factor`` would instead widen every
    stage's output too, a different and much larger network.
    """

    width_factor = 2

    def __init__(
        self,
        in_planes: int,
        planes: int,
        spatial_dims: int = 2,
        stride: int = 1,
        downsample: Shortcut = None,
    ) -> None:
        inner_width = planes * self.width_factor
        super().__init__(in_planes, inner_width, spatial_dims, stride, downsample)
        # The parent sized conv3/bn3 for inner_width * 4 outputs; restore ResNet-50's output width.
        self.conv3 = CONV[spatial_dims](inner_width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = BATCH_NORM[spatial_dims](planes * self.expansion)


class PreActResNetBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al. 2016, "Identity Mappings in Deep Residual Networks").

    BN -> ReLU -> conv three times, then a plain addition with no ReLU after it,
    so the identity path carries the signal unchanged from block to block. A
    projection shortcut takes the pre-activated input, as in the paper, and is
    a bare 1x1 convolution: the BN MONAI appends to projections is dropped.
    """

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        spatial_dims: int = 2,
        stride: int = 1,
        downsample: Shortcut = None,
    ) -> None:
        super().__init__()
        conv, norm = CONV[spatial_dims], BATCH_NORM[spatial_dims]
        self.bn1 = norm(in_planes)
        self.conv1 = conv(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = norm(planes)
        self.conv2 = conv(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = norm(planes)
        self.conv3 = conv(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.act = relu()
        self.downsample = downsample[0] if isinstance(downsample, nn.Sequential) else downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preactivated = self.act(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(preactivated)
        out = self.conv1(preactivated)
        out = self.conv2(self.act(self.bn2(out)))
        out = self.conv3(self.act(self.bn3(out)))
        return out + shortcut


class PreActResNet(ResNet):
    """The ResNet plus the final BN -> ReLU that pre-activation blocks leave to the network.

    Pre-activation blocks end on a bare addition, so the last block's output is
    un-normalised; He et al. add one BN-ReLU before global pooling.
    ``final_act`` is not in place, so its output is safe to hook for Grad-CAM.
    """

    def __init__(self, **resnet_options: Any) -> None:
        super().__init__(**resnet_options)
        final_channels = self.layer4[-1].conv3.out_channels
        self.final_norm = BATCH_NORM[self.spatial_dims](final_channels)
        self.final_act = nn.ReLU(inplace=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.final_norm(super().forward_features(x)))


def _cxr_card(name: str, gradcam_layer: str, input_size: tuple[int, int], overrides: dict[str, Any],
              architecture_revision: int = 1) -> ModelCard:
    """The default ChestX-ray14 card for ``name``, with caller overrides applied."""
    default = ModelCard(
        name=name,
        task="cxr",
        labels=CXR14_LABELS,
        in_channels=1,
        spatial_dims=2,
        input_size=input_size,
        normalization=dict(IMAGENET_GRAY_NORMALIZATION),
        gradcam_layer=gradcam_layer,
        architecture_revision=architecture_revision,
    )
    return default.with_overrides(**overrides)


def _cxr_resnet(
    card: ModelCard,
    block: type[nn.Module],
    layers: Sequence[int],
    block_inplanes: Sequence[int] = RESNET_WIDTHS,
    network_class: type[ResNet] = ResNet,
) -> ResNet:
    """A 2D ResNet (MONAI's layout) shaped by the card, with torchvision's stem and shortcuts."""
    return network_class(
        block=block,
        layers=list(layers),
        block_inplanes=list(block_inplanes),
        spatial_dims=2,
        n_input_channels=card.in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        shortcut_type="B",
        num_classes=len(card.labels),
        feed_forward=True,
        bias_downsample=False,
    )


def _resnet_classifier(name: str, layers: Sequence[int], overrides: dict[str, Any]) -> nn.Module:
    card = _cxr_card(name, gradcam_layer="layer4", input_size=(224, 224), overrides=overrides)
    return attach_card(_cxr_resnet(card, ResNetBottleneck, layers), card)


@register_model(task="cxr")
def chexnet_resnet50(**overrides: Any) -> nn.Module:
    """ResNet-50 (the default CXR model); 23.53M parameters for 14 labels, 1 channel.

    Grad-CAM layer ``layer4``: its output comes from an in-place ReLU inside the
    last block, but nothing modifies it after ``layer4`` returns, so forward and
    full backward hooks on ``layer4`` are safe.
    """
    return _resnet_classifier("chexnet_resnet50", (3, 4, 6, 3), overrides)


@register_model(task="cxr")
def chexnet_resnet101(**overrides: Any) -> nn.Module:
    """ResNet-101; Grad-CAM layer ``layer4`` (as for ResNet-50)."""
    return _resnet_classifier("chexnet_resnet101", (3, 4, 23, 3), overrides)


@register_model(task="cxr")
def chexnet_resnet152(**overrides: Any) -> nn.Module:
    """ResNet-152; Grad-CAM layer ``layer4`` (as for ResNet-50)."""
    return _resnet_classifier("chexnet_resnet152", (3, 8, 36, 3), overrides)


@register_model(task="cxr")
def chexnet_wide_resnet50(**overrides: Any) -> nn.Module:
    """Wide ResNet-50-2 (torchvision's ``wide_resnet50_2`` layout); Grad-CAM layer ``layer4``.

    With 3 channels and 1000 classes it has exactly torchvision's 68,883,240
    parameters (so ~66.8M is the count for 1 channel and 14 labels: 66,856,654).
    """
    card = _cxr_card("chexnet_wide_resnet50", gradcam_layer="layer4", input_size=(224, 224), overrides=overrides)
    return attach_card(_cxr_resnet(card, WideResNetBottleneck, (3, 4, 6, 3)), card)


@register_model(task="cxr")
def chexnet_preact_resnet50(**overrides: Any) -> nn.Module:
    """Pre-activation ResNet-50; Grad-CAM layer ``final_act`` (the final BN-ReLU, not in place)."""
    card = _cxr_card("chexnet_preact_resnet50", gradcam_layer="final_act", input_size=(224, 224), overrides=overrides)
    network = _cxr_resnet(card, PreActResNetBottleneck, (3, 4, 6, 3), network_class=PreActResNet)
    return attach_card(network, card)


@register_model(task="cxr")
def chexnet_densenet121(**overrides: Any) -> nn.Module:
    """DenseNet-121 as in CheXNet (Rajpurkar et al. 2017); 6.96M parameters.

    Grad-CAM layer ``class_layers.relu``: the ReLU after ``features.norm5``, the
    last spatial feature map before pooling. MONAI's layout makes that ReLU in place,
    which would overwrite ``norm5``'s output and break backward hooks, so it
    is replaced by a non-in-place ReLU (it has no weights; checkpoints are
    unaffected).
    """
    card = _cxr_card(
        "chexnet_densenet121", gradcam_layer="class_layers.relu", input_size=(224, 224), overrides=overrides
    )
    network = densenet121(spatial_dims=2, in_channels=card.in_channels, out_channels=len(card.labels))
    network.class_layers.relu = nn.ReLU(inplace=False)
    return attach_card(network, card)


@register_model(task="cxr")
def chexnet_tiny(**overrides: Any) -> nn.Module:
    """A 78k-parameter ResNet (one basic block per stage) for tests; input 128x128.

    Grad-CAM layer ``layer4`` (same in-place note as ResNet-50). Three changes
    from a plain small ResNet make its maps point at lesions (measured with the
    pointing game in tests/explain/test_localisation.py); none adds a weight,
    so the state-dict keys and shapes are those of the plain network:

    * ``layer3`` and ``layer4`` keep their input's resolution (output stride 8,
      not 32): at 128 pixels the Grad-CAM grid is 16 x 16, not 4 x 4, whose
      32-pixel cells are wider than a nodule's pointing-game window.
    * Global max pooling instead of average pooling (as in weakly supervised
      localisation, Oquab et al. 2015): averaged over 256 cells, a nodule's
      one cell barely moves the logit, and on so fine a grid the network
      learned small lesions very slowly (validation mean AUROC 0.89 instead of
      0.98 after the test suite's 12 epochs).
    * Each block's last batch norm starts at zero (Goyal et al. 2017), so every
      block starts as its position-preserving 1x1 shortcut; without it, some
      training seeds learned evidence a cell or two beside each lesion (peaks
      11-20 pixels off, always the same way per label), which classifies as
      well but points beside it.

    These changes made it architecture revision 2: revision-1 checkpoints
    (stride 32, average pooling) fit its tensors but are refused on loading.
    """
    card = _cxr_card("chexnet_tiny", gradcam_layer="layer4", input_size=(128, 128), overrides=overrides,
                     architecture_revision=2)
    network = _cxr_resnet(card, ResNetBlock, (1, 1, 1, 1), block_inplanes=(8, 16, 32, 64))
    for stage in (network.layer3, network.layer4):
        _keep_resolution(stage)
    network.avgpool = ADAPTIVE_MAX_POOL[card.spatial_dims](1)  # the ResNet's forward pools through ``avgpool``
    _zero_init_last_norms(network)
    return attach_card(network, card)


def _keep_resolution(stage: nn.Sequential) -> None:
    """Make a ResNet stage keep its input's resolution (its first block's stride-2 convolutions get stride 1).

    The ResNet (like MONAI's) has no ``replace_stride_with_dilation`` like
    torchvision's; a stride changes no weight shape, so setting it after
    construction gives the same parameters.
    """
    first = stage[0]
    convolutions = [first.conv1] + ([first.downsample[0]] if first.downsample is not None else [])
    for convolution in convolutions:
        convolution.stride = (1,) * len(convolution.stride)
    first.stride = 1


def _zero_init_last_norms(network: ResNet) -> None:
    """Zero the scale of each basic block's last batch norm, so each block starts as its shortcut."""
    for module in network.modules():
        if isinstance(module, ResNetBlock):
            nn.init.zeros_(module.bn2.weight)
