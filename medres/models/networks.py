"""ResNet, DenseNet and the residual U-Net in plain torch, laid out exactly as MONAI's.

The classifiers are MONAI's ``ResNet`` and ``DenseNet121``; the segmentation
network is MONAI's ``UNet`` with residual units, instance norm and PReLU.

Same module names (so the same state-dict keys and shapes: MONAI-built
checkpoints, the torchvision/timm/MedicalNet key maps and Grad-CAM layer names
all keep working), the same construction order and initialisation (so the
same seed gives the same weights, and training is unchanged), the same
forward pass. ``tests/models/test_networks.py`` builds MONAI's networks beside
these and checks all three.

Why not MONAI's own classes: ``import monai`` imports the whole package first
(its data and transforms packages, scipy.signal, pandas, matplotlib), about
2.6 s beyond torch's own import on 2 cores, before any network exists. Batch
scoring and segmentation would pay that on every start for networks that are
a few dozen lines each; MONAI's package layout offers no way to import
``monai.networks`` alone. Training, transforms, losses and resampling are
still MONAI's.

One deliberate difference: MONAI's type-A shortcut (zero-padded identity,
MedicalNet's ResNet-18/34) concatenates ``out.data``, which cuts the gradient
through the shortcut; here the gradient flows, as in MedicalNet's original.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# Layer classes by spatial dimensions (medres builds 2D and 3D networks).
CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE: dict[int, type[nn.Module]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
INSTANCE_NORM: dict[int, type[nn.Module]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
BATCH_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
MAX_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
AVG_POOL: dict[int, type[nn.Module]] = {2: nn.AvgPool2d, 3: nn.AvgPool3d}
ADAPTIVE_AVG_POOL: dict[int, type[nn.Module]] = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
ADAPTIVE_MAX_POOL: dict[int, type[nn.Module]] = {2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}
Shortcut = nn.Module | Callable[[torch.Tensor], torch.Tensor] | None


def relu() -> nn.ReLU:
    """The in-place ReLU MONAI's networks use by default."""
    return nn.ReLU(inplace=True)


def initialise_as_monai(network: nn.Module, spatial_dims: int, **conv_init: str) -> None:
    """MONAI's initialisation of its ResNet and DenseNet, in module order (so a seed gives MONAI's weights).

    He-normal convolutions (``conv_init``: ``kaiming_normal_``'s mode and
    nonlinearity, which the two networks choose differently), unit batch-norm
    scales, zero biases of batch norms and linear layers.
    """
    for module in network.modules():
        if isinstance(module, CONV[spatial_dims]):
            nn.init.kaiming_normal_(module.weight, **conv_init)
        elif isinstance(module, BATCH_NORM[spatial_dims]):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
        elif isinstance(module, nn.Linear):
            nn.init.constant_(module.bias, 0)


class ResNetBlock(nn.Module):
    """Basic block: 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the shortcut, then ReLU (``self.act`` twice)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, spatial_dims: int = 2, stride: int = 1,
                 downsample: Shortcut = None) -> None:
        super().__init__()
        conv, norm = CONV[spatial_dims], BATCH_NORM[spatial_dims]
        self.conv1 = conv(in_planes, planes, kernel_size=3, padding=1, stride=stride, bias=False)
        self.bn1 = norm(planes)
        self.act = relu()
        self.conv2 = conv(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.act(out)


class ResNetBottleneck(nn.Module):
    """Bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 four times wider, BN after each, shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, spatial_dims: int = 2, stride: int = 1,
                 downsample: Shortcut = None) -> None:
        super().__init__()
        conv, norm = CONV[spatial_dims], BATCH_NORM[spatial_dims]
        self.conv1 = conv(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = conv(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = norm(planes * self.expansion)
        self.act = relu()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.act(out)


def zero_padded_shortcut(x: torch.Tensor, planes: int, stride: int) -> torch.Tensor:
    """Type-A shortcut: the input subsampled by ``stride``, its channels padded with zeros up to ``planes``."""
    subsampled = x[(slice(None), slice(None), *[slice(None, None, stride)] * (x.ndim - 2))]
    return F.pad(subsampled, (0, 0) * (x.ndim - 2) + (0, planes - x.shape[1]))


class ResNet(nn.Module):
    """ResNet for 2D/3D inputs, MONAI's ``ResNet`` layout: stem, max pooling, four stages, pooling, ``fc``.

    Args:
        block: The block class (``expansion`` says how much wider its output is than ``planes``).
        layers: Blocks per stage.
        block_inplanes: Each stage's ``planes``.
        spatial_dims: 2 or 3.
        n_input_channels: Input channels.
        conv1_t_size: The stem convolution's kernel size (padding keeps it centred).
        conv1_t_stride: The stem convolution's stride.
        shortcut_type: ``"B"`` projects with a 1x1 convolution and BN where the shape changes,
            ``"A"`` pads with zeros (no weights).
        num_classes: Outputs of ``fc``.
        feed_forward: Whether there is an ``fc`` (without: pooled features out).
        bias_downsample: Whether type-B projections have a bias.
    """

    def __init__(self, block: type[nn.Module], layers: Sequence[int], block_inplanes: Sequence[int],
                 spatial_dims: int = 3, n_input_channels: int = 3, conv1_t_size: int = 7, conv1_t_stride: int = 1,
                 shortcut_type: str = "B", num_classes: int = 400, feed_forward: bool = True,
                 bias_downsample: bool = True) -> None:
        super().__init__()
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type {shortcut_type!r} is not 'A' or 'B'")
        self.spatial_dims, self.shortcut_type, self.bias_downsample = spatial_dims, shortcut_type, bias_downsample
        self.in_planes = block_inplanes[0]
        self.conv1 = CONV[spatial_dims](n_input_channels, self.in_planes, kernel_size=conv1_t_size,
                                        stride=conv1_t_stride, padding=conv1_t_size // 2, bias=False)
        self.bn1 = BATCH_NORM[spatial_dims](self.in_planes)
        self.act = relu()
        self.maxpool = MAX_POOL[spatial_dims](kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, block_inplanes[0], layers[0])
        self.layer2 = self._make_layer(block, block_inplanes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, block_inplanes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, block_inplanes[3], layers[3], stride=2)
        self.avgpool = ADAPTIVE_AVG_POOL[spatial_dims](1)
        self.fc = nn.Linear(block_inplanes[3] * block.expansion, num_classes) if feed_forward else None
        initialise_as_monai(self, spatial_dims, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        """One stage; only its first block changes resolution or width (with the shortcut it needs)."""
        width = planes * block.expansion
        downsample: Shortcut = None
        if stride != 1 or self.in_planes != width:
            if self.shortcut_type == "A":
                downsample = partial(zero_padded_shortcut, planes=width, stride=stride)
            else:
                downsample = nn.Sequential(
                    CONV[self.spatial_dims](self.in_planes, width, kernel_size=1, stride=stride,
                                            bias=self.bias_downsample),
                    BATCH_NORM[self.spatial_dims](width),
                )
        stage = [block(self.in_planes, planes, spatial_dims=self.spatial_dims, stride=stride, downsample=downsample)]
        self.in_planes = width
        stage += [block(self.in_planes, planes, spatial_dims=self.spatial_dims) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map."""
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return x if self.fc is None else self.fc(x)


class DenseLayer(nn.Module):
    """BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv (``self.layers``); its output is appended to its input."""

    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        conv, norm = CONV[spatial_dims], BATCH_NORM[spatial_dims]
        bottleneck = bn_size * growth_rate
        self.layers = nn.Sequential(OrderedDict([
            ("norm1", norm(in_channels)),
            ("relu1", relu()),
            ("conv1", conv(in_channels, bottleneck, kernel_size=1, bias=False)),
            ("norm2", norm(bottleneck)),
            ("relu2", relu()),
            ("conv2", conv(bottleneck, growth_rate, kernel_size=3, padding=1, bias=False)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], 1)


def dense_block(spatial_dims: int, layers: int, in_channels: int, bn_size: int, growth_rate: int) -> nn.Sequential:
    """``layers`` dense layers, named ``denselayer1..``, each ``growth_rate`` channels wider than the last."""
    return nn.Sequential(OrderedDict(
        (f"denselayer{index + 1}", DenseLayer(spatial_dims, in_channels + index * growth_rate, growth_rate, bn_size))
        for index in range(layers)
    ))


def transition(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """BN -> ReLU -> 1x1 conv -> 2x2 average pooling between dense blocks."""
    return nn.Sequential(OrderedDict([
        ("norm", BATCH_NORM[spatial_dims](in_channels)),
        ("relu", relu()),
        ("conv", CONV[spatial_dims](in_channels, out_channels, kernel_size=1, bias=False)),
        ("pool", AVG_POOL[spatial_dims](kernel_size=2, stride=2)),
    ]))


class DenseNet(nn.Module):
    """DenseNet (Huang et al. 2017), MONAI's ``DenseNet`` layout: ``features`` then ``class_layers``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, init_features: int = 64,
                 growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16), bn_size: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", CONV[spatial_dims](in_channels, init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", BATCH_NORM[spatial_dims](init_features)),
            ("relu0", relu()),
            ("pool0", MAX_POOL[spatial_dims](kernel_size=3, stride=2, padding=1)),
        ]))
        channels = init_features
        for index, layers in enumerate(block_config):
            self.features.add_module(f"denseblock{index + 1}",
                                     dense_block(spatial_dims, layers, channels, bn_size, growth_rate))
            channels += layers * growth_rate
            if index == len(block_config) - 1:
                self.features.add_module("norm5", BATCH_NORM[spatial_dims](channels))
            else:
                self.features.add_module(f"transition{index + 1}", transition(spatial_dims, channels, channels // 2))
                channels //= 2
        self.class_layers = nn.Sequential(OrderedDict([
            ("relu", relu()),
            ("pool", ADAPTIVE_AVG_POOL[spatial_dims](1)),
            ("flatten", nn.Flatten(1)),
            ("out", nn.Linear(channels, out_channels)),
        ]))
        initialise_as_monai(self, spatial_dims)  # kaiming_normal_'s defaults: fan-in, leaky ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_layers(self.features(x))


def densenet121(spatial_dims: int, in_channels: int, out_channels: int) -> DenseNet:
    """DenseNet-121: :class:`DenseNet`'s defaults (64 initial features, growth 32, blocks of 6, 12, 24, 16 layers)."""
    return DenseNet(spatial_dims, in_channels, out_channels)


def convolution_block(spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1,
                      transposed: bool = False, conv_only: bool = False) -> nn.Sequential:
    """MONAI's ``Convolution`` with the U-Net's settings: 3^d kernel ("same" padding), then instance norm and PReLU.

    Modules ``conv`` and ``adn`` (``N``: instance norm without weights, ``A``:
    PReLU), as MONAI names them. Transposed, stride 2 doubles the size exactly
    (output padding ``stride - 1``). MONAI's zero-probability dropout is left out
    (it has no weights and does nothing).
    """
    if transposed:
        conv = CONV_TRANSPOSE[spatial_dims](in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                                            output_padding=stride - 1)
    else:
        conv = CONV[spatial_dims](in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
    if conv_only:
        return nn.Sequential(OrderedDict([("conv", conv)]))
    adn = nn.Sequential(OrderedDict([("N", INSTANCE_NORM[spatial_dims](out_channels)), ("A", nn.PReLU())]))
    return nn.Sequential(OrderedDict([("conv", conv), ("adn", adn)]))


class ResidualUnit(nn.Module):
    """``subunits`` convolution blocks (``conv.unit0..``; the first one strided) plus a residual path.

    The residual is the input itself where shape and channels are kept, a
    1x1 convolution where only the channels change, and a strided 3^d
    convolution where the size changes (MONAI's ``ResidualUnit``).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, subunits: int = 1,
                 last_conv_only: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.residual: nn.Module = nn.Identity()
        channels = in_channels
        for index in range(max(1, subunits)):
            conv_only = last_conv_only and index == subunits - 1
            self.conv.add_module(f"unit{index}", convolution_block(spatial_dims, channels, out_channels,
                                                                   stride if index == 0 else 1, conv_only=conv_only))
            channels = out_channels
        if stride != 1:
            self.residual = CONV[spatial_dims](in_channels, out_channels, kernel_size=3, stride=stride, padding=1)
        elif in_channels != out_channels:
            self.residual = CONV[spatial_dims](in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual(x)
        return self.conv(x) + residual


class SkipConnection(nn.Module):
    """The input and ``submodule``'s output, concatenated along the channels."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class ResidualUNet(nn.Module):
    """MONAI's ``UNet`` with residual units, instance norm and PReLU, as ``model`` (nested ``Sequential``\\ s).

    Each level is ``Sequential(down, SkipConnection(next level), up)``: ``down``
    a strided residual unit, ``up`` a transposed convolution then a one-unit
    residual (the top one ends on a bare convolution: logits). The bottom is a
    stride-1 residual unit. Levels are built bottom first, as MONAI builds them,
    so a seed gives MONAI's weights.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels (one logit per label).
        channels: Filters per level, top first.
        strides: Downsampling per level (``len(channels) - 1`` of them).
        num_res_units: Convolution blocks per downsampling residual unit (at least 1).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 strides: Sequence[int], num_res_units: int = 2) -> None:
        super().__init__()
        if num_res_units < 1 or len(strides) != len(channels) - 1:
            raise ValueError("need num_res_units >= 1 and one stride per level below the top")
        self.spatial_dims, self.num_res_units = spatial_dims, num_res_units
        self.channels, self.strides = tuple(channels), tuple(strides)  # as MONAI's UNet keeps them
        self.model = self._level(in_channels, out_channels, list(channels), list(strides), is_top=True)

    def _level(self, in_channels: int, out_channels: int, channels: list[int], strides: list[int],
               is_top: bool) -> nn.Sequential:
        width, stride = channels[0], strides[0]
        if len(channels) > 2:
            below: nn.Module = self._level(width, width, channels[1:], strides[1:], is_top=False)
            up_channels = 2 * width
        else:
            below = ResidualUnit(self.spatial_dims, width, channels[1], 1, self.num_res_units)
            up_channels = width + channels[1]
        down = ResidualUnit(self.spatial_dims, in_channels, width, stride, self.num_res_units)
        up = nn.Sequential(
            convolution_block(self.spatial_dims, up_channels, out_channels, stride, transposed=True),
            ResidualUnit(self.spatial_dims, out_channels, out_channels, 1, 1, last_conv_only=is_top),
        )
        return nn.Sequential(down, SkipConnection(below), up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
