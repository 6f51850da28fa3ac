"""WideResNet-38 (ResNet38d, SPEC 4.2): pre-activation units, output stride 8, 4096 channels."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.backbones.base import Backbone


class ResBlock(nn.Module):
    """Basic pre-activation unit; the shortcut is conv_branch1(ReLU(BN(x))) when the shape changes, else x."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int = 1, first_dilation: int | None = None,
                 dilation: int = 1):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = c_in == c_out and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(c_in)
        self.conv_branch2a = nn.Conv2d(c_in, c_mid, 3, stride, padding=first_dilation, dilation=first_dilation,
                                       bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(c_mid)
        self.conv_branch2b1 = nn.Conv2d(c_mid, c_out, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(t)
        r = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(t))))
        return shortcut + r


class ResBlockBot(nn.Module):
    """Bottleneck pre-activation unit with dropout; the shortcut is always a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(c_in)
        self.conv_branch2a = nn.Conv2d(c_in, c_out // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(c_out // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(c_out // 4, c_out // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(c_out // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(c_out // 2, c_out, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(t)
        r = self.conv_branch2a(t)
        r = self.dropout_2b1(F.relu(self.bn_branch2b1(r)))
        r = self.conv_branch2b1(r)
        r = self.dropout_2b2(F.relu(self.bn_branch2b2(r)))
        return shortcut + self.conv_branch2b2(r)


class ResNet38d(Backbone):
    """Layer names are the original's checkpoint prefixes (conv1a, b2 ... b7, bn7)."""

    channels = {"conv3": 256, "conv6": 4096}
    lr_mult = (1, 2, 10, 20)

    def __init__(self, pretrained: bool = True):
        super().__init__(pretrained)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)
        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)
        self.b4 = ResBlock(256, 512, 512, stride=2)
        self.b4_1 = ResBlock(512, 512, 512)
        self.b4_2 = ResBlock(512, 512, 512)
        self.b4_3 = ResBlock(512, 512, 512)
        self.b4_4 = ResBlock(512, 512, 512)
        self.b4_5 = ResBlock(512, 512, 512)
        self.b5 = ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=2)
        self.b6 = ResBlockBot(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = ResBlockBot(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

    def frozen_layers(self) -> list[nn.Module]:
        return [self.conv1a, self.b2, self.b2_1, self.b2_2]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1a(x)
        x = self.b2_2(self.b2_1(self.b2(x)))
        x = self.b3_2(self.b3_1(self.b3(x)))
        conv3 = x  # [B,256,H/4,W/4]: the raw residual sum of b3_2
        x = self.b4(x)
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(x)))))
        x = self.b5_2(self.b5_1(self.b5(x)))
        x = self.b7(self.b6(x))
        conv6 = F.relu(self.bn7(x))  # [B,4096,H/8,W/8]
        return {"conv3": conv3, "conv6": conv6}
