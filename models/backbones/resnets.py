"""ResNet-50/101 in torchvision's layout (SPEC 4.4; output stride 16, layer4 with stride 1 and no dilation) and the
light ResNet-18 dilated to output stride 8 (new: trained from scratch, for CPU demos and tests)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

from models.backbones import Backbone


class ResNet(Backbone):
    channels = {"conv3": 256, "conv6": 2048}
    lr_mult = (1, 1, 10, 10)

    def __init__(self, depth: int):
        super().__init__()
        net = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth](weights=None)
        # layer4 keeps the resolution of layer3 (stride 1), without dilation, as the original
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def frozen_layers(self) -> list[nn.Module]:
        return [self.conv1, self.bn1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        conv3 = self.layer1(x)  # [B,256,H/4,W/4]
        conv6 = self.layer4(self.layer3(self.layer2(conv3)))  # [B,2048,H/16,W/16]
        return {"conv3": conv3, "conv6": conv6}


class ResNet18d(Backbone):
    """torchvision ResNet-18 with layer3/layer4 dilated (2, 4) instead of strided: output stride 8, 512 channels.
    It starts from random weights, so nothing is frozen and its BNs train normally."""

    channels = {"conv3": 64, "conv6": 512}
    lr_mult = (1, 1, 1, 1)
    pretrained = False

    def __init__(self):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
            for i, block in enumerate(layer):
                block.conv1.stride = (1, 1)
                block.conv1.dilation = block.conv1.padding = (dilation // 2 if i == 0 else dilation,) * 2
                block.conv2.dilation = block.conv2.padding = (dilation, dilation)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        conv3 = self.layer1(x)  # [B,64,H/4,W/4]
        conv6 = self.layer4(self.layer3(self.layer2(conv3)))  # [B,512,H/8,W/8]
        return {"conv3": conv3, "conv6": conv6}
