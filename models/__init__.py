"""``build_model(cfg.NET)``: a backbone by name, the head by NET.MODEL, the ImageNet weights unless FROM_SCRATCH."""
from __future__ import annotations

import torch.nn as nn

from models.backbones import build_backbone
from models.stage_net import CAMNet, SingleStageNet
from utils.errors import UserError

MODELS = ("ae", "bsl")


def build_model(net_cfg, num_classes: int = 21) -> nn.Module:
    from models.weights import load_init_weights

    backbone = build_backbone(net_cfg.BACKBONE)
    if backbone.pretrained and not net_cfg.FROM_SCRATCH:
        load_init_weights(backbone, net_cfg.PRE_WEIGHTS_PATH, net_cfg.BACKBONE)
    if net_cfg.MODEL == "ae":
        return SingleStageNet(backbone, num_classes, focal_p=net_cfg.FOCAL_P, focal_lambda=net_cfg.FOCAL_LAMBDA,
                              pamr_iter=net_cfg.PAMR_ITER, pamr_kernel=tuple(net_cfg.PAMR_KERNEL),
                              sg_psi=net_cfg.SG_PSI)
    if net_cfg.MODEL == "bsl":
        return CAMNet(backbone, num_classes, bg_score=net_cfg.BG_SCORE)
    raise UserError(f"unknown model {net_cfg.MODEL!r} (NET.MODEL); valid: {', '.join(MODELS)}")
