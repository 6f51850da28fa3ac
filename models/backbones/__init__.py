"""Backbones behind one contract: ``forward(x) -> {"conv3": stride-4 features, "conv6": deepest features}``,
channel counts in ``channels``, frozen layers in ``frozen`` (weights and BN statistics fixed), BNs in ``bn_frozen``
(always in eval mode) and the learning-rate multipliers of the original's four parameter groups."""
from __future__ import annotations

import torch.nn as nn

from utils.errors import UserError


class Backbone(nn.Module):
    #: {"conv3": channels of the stride-4 features, "conv6": channels of the deepest features (fan-out)}
    channels: dict[str, int]
    #: learning-rate multipliers of the groups (pretrained weights, pretrained biases, new weights, new biases)
    lr_mult: tuple[float, float, float, float] = (1, 2, 10, 20)
    #: whether the backbone starts from ImageNet weights (then all its BNs are frozen, SPEC 5.2)
    pretrained: bool = True

    def frozen_layers(self) -> list[nn.Module]:
        """Conv/BN layers whose weights are never trained (SPEC 4)."""
        return []


def build_backbone(name: str) -> Backbone:
    from models.backbones.resnet38d import ResNet38d
    from models.backbones.resnets import ResNet, ResNet18d
    from models.backbones.vgg16d import VGG16d

    builders = {
        "resnet38": ResNet38d,
        "vgg16": VGG16d,
        "resnet50": lambda: ResNet(50),
        "resnet101": lambda: ResNet(101),
        "resnet18": ResNet18d,
    }
    if name not in builders:
        raise UserError(f"unknown backbone {name!r} (NET.BACKBONE); valid: {', '.join(builders)}")
    return builders[name]()


BACKBONES = ("resnet38", "vgg16", "resnet50", "resnet101", "resnet18")
