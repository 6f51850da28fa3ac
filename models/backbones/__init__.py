"""Backbones by name (SPEC 4): the original's four, the light ResNet-18 and the ImageNet-pretrained
EfficientNet-Lite0/1/2 for CPU work."""
from __future__ import annotations

from typing import Callable

from models.backbones.base import Backbone
from models.backbones.efficientnet import WHOLE_NETWORK, EfficientNetLite0, EfficientNetLite1, EfficientNetLite2
from models.backbones.resnet38d import ResNet38d
from models.backbones.resnets import RESNET18_WIDTH, ResNet18d, ResNet50, ResNet101
from models.backbones.vgg16d import VGG16d
from utils.errors import UserError

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet38": ResNet38d,
    "vgg16": VGG16d,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet18": ResNet18d,
    "efficientnet_lite0": EfficientNetLite0,
    "efficientnet_lite1": EfficientNetLite1,
    "efficientnet_lite2": EfficientNetLite2,
}


def build_backbone(name: str, pretrained: bool = True, light_width: int = RESNET18_WIDTH,
                   last_stage: int = WHOLE_NETWORK) -> Backbone:
    """The backbone called ``name`` (NET.BACKBONE), randomly initialised. ``pretrained`` says that ImageNet weights
    will be loaded into it, which makes the model freeze its early layers and BNs; the light resnet18 has no such
    file and is always trained from scratch. ``light_width`` (NET.LIGHT_WIDTH) sets the light resnet18's width,
    ``last_stage`` (NET.LAST_STAGE) the EfficientNets' last stage of blocks."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r} (NET.BACKBONE); valid: {', '.join(BACKBONES)}")
    if name.startswith("efficientnet_lite"):
        if light_width != RESNET18_WIDTH:
            raise UserError(f"NET.LIGHT_WIDTH is {light_width}, but it sets the width of the light resnet18 only; "
                            f"NET.BACKBONE {name} has the original's channels: remove the key or set it to "
                            f"{RESNET18_WIDTH}")
        return BACKBONES[name](pretrained=pretrained, last_stage=last_stage)
    if last_stage != WHOLE_NETWORK:
        raise UserError(f"NET.LAST_STAGE is {last_stage}, but it shortens the EfficientNet-Lite backbones only; "
                        f"NET.BACKBONE {name} keeps all its stages: remove the key or set it to {WHOLE_NETWORK}")
    if name == "resnet18":
        return ResNet18d(pretrained=pretrained, width=light_width)
    if light_width != RESNET18_WIDTH:
        raise UserError(f"NET.LIGHT_WIDTH is {light_width}, but it sets the width of the light resnet18 only; "
                        f"NET.BACKBONE {name} has the original's channels: remove the key or set it to "
                        f"{RESNET18_WIDTH}")
    return BACKBONES[name](pretrained=pretrained)


__all__ = ["BACKBONES", "Backbone", "build_backbone"]
