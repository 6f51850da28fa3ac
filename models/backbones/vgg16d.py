"""Dilated VGG16 (SPEC 4.3): conv3 after conv3_3 (stride 4), conv6 after fc7 (stride 8, 1024 channels)."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.base import Backbone

# in place: a convolution's backward needs its input, not its output, so no tensor autograd saved is overwritten
_relu = partial(F.relu, inplace=True)


class VGG16d(Backbone):
    channels = {"conv3": 256, "conv6": 1024}
    lr_mult = (1, 2, 10, 20)

    def __init__(self, pretrained: bool = True, fc6_dilation: int = 1):
        super().__init__(pretrained)
        self.conv1_1 = nn.Conv2d(3, 64, 3, padding=1)
        self.conv1_2 = nn.Conv2d(64, 64, 3, padding=1)
        self.pool1 = nn.MaxPool2d(3, 2, 1)
        self.conv2_1 = nn.Conv2d(64, 128, 3, padding=1)
        self.conv2_2 = nn.Conv2d(128, 128, 3, padding=1)
        self.pool2 = nn.MaxPool2d(3, 2, 1)
        self.conv3_1 = nn.Conv2d(128, 256, 3, padding=1)
        self.conv3_2 = nn.Conv2d(256, 256, 3, padding=1)
        self.conv3_3 = nn.Conv2d(256, 256, 3, padding=1)
        self.pool3 = nn.MaxPool2d(3, 2, 1)
        self.conv4_1 = nn.Conv2d(256, 512, 3, padding=1)
        self.conv4_2 = nn.Conv2d(512, 512, 3, padding=1)
        self.conv4_3 = nn.Conv2d(512, 512, 3, padding=1)
        self.pool4 = nn.MaxPool2d(3, 1, 1)
        self.conv5_1 = nn.Conv2d(512, 512, 3, padding=2, dilation=2)
        self.conv5_2 = nn.Conv2d(512, 512, 3, padding=2, dilation=2)
        self.conv5_3 = nn.Conv2d(512, 512, 3, padding=2, dilation=2)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.drop6 = nn.Dropout2d(0.5)
        self.fc7 = nn.Conv2d(1024, 1024, 1)

    def frozen_layers(self) -> list[nn.Module]:
        return [self.conv1_1, self.conv1_2]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.pool1(_relu(self.conv1_2(_relu(self.conv1_1(x)))))
        x = self.pool2(_relu(self.conv2_2(_relu(self.conv2_1(x)))))
        x = _relu(self.conv3_3(_relu(self.conv3_2(_relu(self.conv3_1(x))))))
        conv3 = x  # [B,256,H/4,W/4]
        x = self.pool3(x)
        x = self.pool4(_relu(self.conv4_3(_relu(self.conv4_2(_relu(self.conv4_1(x)))))))
        x = _relu(self.conv5_3(_relu(self.conv5_2(_relu(self.conv5_1(x))))))
        x = self.drop6(_relu(self.fc6(x)))
        conv6 = _relu(self.fc7(x))  # [B,1024,H/8,W/8]
        return {"conv3": conv3, "conv6": conv6}
