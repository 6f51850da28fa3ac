"""ResNet-50/101 in torchvision's layout (SPEC 4.4) and the light ResNet-18 dilated to output stride 8 (new)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

from models.backbones.base import Backbone
from utils.errors import UserError


class _TorchvisionResNet(Backbone):
    """A torchvision ResNet without its classifier; the layers keep torchvision's names, which are the checkpoint
    keys of both the ImageNet files and the original's snapshots."""

    def _adopt(self, net: torchvision.models.ResNet) -> None:
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        conv3 = self.layer1(x)  # [B,C3,H/4,W/4]
        conv6 = self.layer4(self.layer3(self.layer2(conv3)))  # [B,F,H/16,W/16] (ResNet-50/101) or H/8 (ResNet-18)
        return {"conv3": conv3, "conv6": conv6}


class _DeepResNet(_TorchvisionResNet):
    """ResNet-50/101 as the original: v1.5 bottlenecks, layer4 with stride 1 and *no* dilation, so the deepest
    features have output stride 16 (the ASPP rates are still those of stride 8, SPEC 13)."""

    channels = {"conv3": 256, "conv6": 2048}
    lr_mult = (1, 1, 10, 10)
    depth: int

    def __init__(self, pretrained: bool = True):
        super().__init__(pretrained)
        build = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[self.depth]
        net = build(weights=None)
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self._adopt(net)

    def frozen_layers(self) -> list[nn.Module]:
        return [self.conv1, self.bn1]


class ResNet50(_DeepResNet):
    depth = 50


class ResNet101(_DeepResNet):
    depth = 101


# dilations of layer3 and layer4 that replace their stride 2 (torchvision's replace_stride_with_dilation rule,
# which torchvision does not implement for BasicBlock): the first conv of a layer keeps the previous dilation
RESNET18_DILATIONS = ((3, 2), (4, 4))
RESNET18_WIDTH = 64  # channels of the first stage (torchvision's)


class ResNet18d(_TorchvisionResNet):
    """torchvision ResNet-18 with layer3/layer4 dilated (2, 4) instead of strided: output stride 8 like ResNet38,
    ``width`` channels at stride 4 and 8 x ``width`` at stride 8 (64 and 512, about 11 M parameters, with
    torchvision's width; NET.LIGHT_WIDTH). There is no ImageNet file for it here: it is trained from scratch (the
    synthetic demo, CPU tests), so nothing is frozen and its BNs train normally."""

    lr_mult = (1, 1, 1, 1)
    has_init_weights = False

    def __init__(self, pretrained: bool = False, width: int = RESNET18_WIDTH):
        super().__init__(pretrained)
        if width < 1:
            raise UserError(f"NET.LIGHT_WIDTH is {width}; it must be a positive number of channels")
        self.channels = {"conv3": width, "conv6": 8 * width}
        net = torchvision.models.resnet18(weights=None)
        if width != RESNET18_WIDTH:
            _set_width(net, width)
        previous = 1
        for index, dilation in RESNET18_DILATIONS:
            layer = getattr(net, f"layer{index}")
            for i, block in enumerate(layer):
                first = previous if i == 0 else dilation
                block.conv1.stride = (1, 1)
                block.conv1.dilation = block.conv1.padding = (first, first)
                block.conv2.dilation = block.conv2.padding = (dilation, dilation)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
            previous = dilation
        self._adopt(net)


def _set_width(net: torchvision.models.ResNet, width: int) -> None:
    """Rebuild the stem and the four stages of a torchvision ResNet-18 with ``width``, 2, 4 and 8 x ``width``
    channels, initialised as torchvision initialises them."""
    block = torchvision.models.resnet.BasicBlock
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    for index in range(1, 5):
        stage = net._make_layer(block, width * 2 ** (index - 1), 2, stride=1 if index == 1 else 2)
        setattr(net, f"layer{index}", stage)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
