"""medres's torch-only ResNet/DenseNet against MONAI's: same keys, same initial weights per seed, same outputs.

``medres.models.networks`` re-lays MONAI's ``ResNet`` and ``DenseNet121`` so
that scoring never imports MONAI; these tests build MONAI's networks with the
settings each registered model used when it was MONAI's, and compare.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet121, ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck

from medres.models import create_model
from medres.models.networks import zero_padded_shortcut

WIDTHS = [64, 128, 256, 512]


def _monai_cxr_resnet(layers: list[int]) -> ResNet:
    return ResNet(block=ResNetBottleneck, layers=layers, block_inplanes=WIDTHS, spatial_dims=2, n_input_channels=1,
                  conv1_t_size=7, conv1_t_stride=2, shortcut_type="B", num_classes=14, feed_forward=True,
                  bias_downsample=False)


def _monai_medicalnet(block, layers: list[int], widths: list[int], shortcut: str, bias: bool) -> ResNet:
    return ResNet(block=block, layers=layers, block_inplanes=widths, spatial_dims=3, n_input_channels=1,
                  conv1_t_size=7, conv1_t_stride=2, shortcut_type=shortcut, bias_downsample=bias, num_classes=1)


MONAI_EQUIVALENTS = {
    "chexnet_densenet121": (lambda: DenseNet121(spatial_dims=2, in_channels=1, out_channels=14), (2, 1, 64, 64)),
    "chexnet_resnet50": (lambda: _monai_cxr_resnet([3, 4, 6, 3]), (2, 1, 64, 64)),
    "chexnet_resnet101": (lambda: _monai_cxr_resnet([3, 4, 23, 3]), (2, 1, 64, 64)),
    "resnet3d_18": (lambda: _monai_medicalnet(ResNetBlock, [2, 2, 2, 2], WIDTHS, "A", True), (2, 1, 32, 32, 32)),
    "resnet3d_50": (lambda: _monai_medicalnet(ResNetBottleneck, [3, 4, 6, 3], WIDTHS, "B", False),
                    (2, 1, 32, 32, 32)),
    "resnet3d_tiny": (lambda: _monai_medicalnet(ResNetBlock, [1, 1, 1, 1], [8, 16, 32, 64], "B", False),
                      (2, 1, 32, 32, 32)),
}


@pytest.mark.parametrize("name", sorted(MONAI_EQUIVALENTS))
def test_same_seed_gives_monais_weights_and_the_same_outputs(name):
    build_monai, input_shape = MONAI_EQUIVALENTS[name]
    torch.manual_seed(7)
    reference = build_monai()
    torch.manual_seed(7)
    ours = create_model(name)

    expected, actual = reference.state_dict(), ours.state_dict()
    assert list(actual) == list(expected)  # same keys in the same order
    for key, tensor in expected.items():
        torch.testing.assert_close(actual[key], tensor, rtol=0, atol=0, msg=key)

    # Same outputs, in evaluation and (batch statistics, weights updated in place) in training mode.
    inputs = torch.randn(input_shape, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        reference.train(train)
        ours.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(inputs), reference(inputs), rtol=1e-5, atol=1e-5)


def test_chexnet_tiny_is_monais_small_resnet_with_its_three_changes():
    """The test model: MONAI's one-block ResNet, stride-1 layer3/4, global max pooling, zeroed last norms."""
    torch.manual_seed(3)
    reference = ResNet(block=ResNetBlock, layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64], spatial_dims=2,
                       n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type="B", num_classes=14,
                       bias_downsample=False)
    for stage in (reference.layer3, reference.layer4):
        stage[0].conv1.stride, stage[0].downsample[0].stride = (1, 1), (1, 1)
    reference.avgpool = torch.nn.AdaptiveMaxPool2d(1)
    for block in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
        torch.nn.init.zeros_(block[0].bn2.weight)
    torch.manual_seed(3)
    ours = create_model("chexnet_tiny")

    expected = reference.state_dict()
    assert list(ours.state_dict()) == list(expected)
    for key, tensor in ours.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=key)
    inputs = torch.randn(2, 1, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(inputs), reference.eval()(inputs), rtol=1e-5, atol=1e-5)


def test_type_a_shortcut_equals_monais_and_lets_the_gradient_through():
    reference = ResNet(block=ResNetBlock, layers=[1, 1, 1, 1], block_inplanes=[4, 8, 16, 32], spatial_dims=3,
                       n_input_channels=1, shortcut_type="A")
    x = torch.randn(2, 4, 7, 6, 5, requires_grad=True)
    expected = reference._downsample_basic_block(x, planes=8, stride=2, spatial_dims=3)
    actual = zero_padded_shortcut(x, planes=8, stride=2)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    actual.sum().backward()
    assert x.grad is not None and float(x.grad[:, :, ::2, ::2, ::2].sum()) == x[:, :, ::2, ::2, ::2].numel()


@pytest.mark.parametrize("name,channels,num_res_units,shape", [
    ("resunet3d_tiny", (8, 16, 32, 64), 1, (2, 1, 48, 48, 32)),
    ("resunet3d", (16, 32, 64, 128, 256), 2, (1, 1, 32, 32, 32)),
])
def test_residual_unet_is_monais_unet(name, channels, num_res_units, shape):
    from monai.networks.nets import UNet

    torch.manual_seed(11)
    reference = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=channels,
                     strides=(2,) * (len(channels) - 1), num_res_units=num_res_units, norm="instance")
    torch.manual_seed(11)
    ours = create_model(name)

    expected = reference.state_dict()
    assert list(ours.state_dict()) == list(expected)
    for key, tensor in ours.state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=key)
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    for train in (False, True):
        with torch.no_grad():
            torch.testing.assert_close(ours.train(train)(inputs), reference.train(train)(inputs),
                                       rtol=1e-5, atol=1e-5)
