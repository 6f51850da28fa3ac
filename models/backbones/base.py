"""The contract every backbone keeps, so that the heads never depend on a particular network."""
from __future__ import annotations

import torch
import torch.nn as nn


class Backbone(nn.Module):
    """``forward(x [B,3,H,W] normalised) -> {"conv3": stride-4 features, "conv6": deepest features}``.

    Class attributes describe the network to the head and to the optimiser:
    ``channels`` the channel counts of both feature maps, ``lr_mult`` the learning-rate multipliers of the four
    parameter groups (pretrained weights, pretrained biases, new weights, new biases; SPEC 4.1) and
    ``has_init_weights`` whether an ImageNet file exists for it. The instance attribute ``pretrained`` says whether
    this copy starts from that file: only then are its named layers and all its BNs frozen (SPEC 4, 5.2), because
    freezing randomly initialised layers would keep them random for ever.
    """

    channels: dict[str, int]
    lr_mult: tuple[float, float, float, float]
    has_init_weights: bool = True

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.pretrained = bool(pretrained and self.has_init_weights)

    def frozen_layers(self) -> list[nn.Module]:
        """Layers whose weights stay at their ImageNet values (SPEC 4.2-4.4); the model freezes them."""
        return []

    def convert_init_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ImageNet file's tensors under this backbone's keys (the original's files already use them)."""
        return state
