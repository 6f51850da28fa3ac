"""``build_model(cfg.NET, num_classes)``: the backbone by NET.BACKBONE, the model by NET.MODEL ("ae" single-stage,
"bsl" CAM baseline), and the ImageNet initialisation from NET.PRE_WEIGHTS_PATH unless NET.FROM_SCRATCH;
``load_trained_model`` builds one and loads a snapshot into it."""
from __future__ import annotations

import torch.nn as nn

from models.backbones import build_backbone
from models.stage_net import HEAD_WIDTH, CAMNet, SingleStageNet
from models.weights import load_init_weights, load_snapshot
from utils.errors import UserError

MODELS = ("ae", "bsl")


def build_model(net_cfg, num_classes: int = 21, init_weights: bool = True) -> nn.Module:
    """The model NET describes, on the CPU (the caller moves it to its device).

    With NET.FROM_SCRATCH the backbone is not loaded and, since its layers are random, not frozen either (its BNs
    train normally). The light "resnet18" is always trained from scratch. ``init_weights`` False builds the same
    model (the same frozen layers) without reading the ImageNet file: for a model whose every tensor comes from a
    snapshot next.
    """
    if net_cfg.MODEL not in MODELS:
        raise UserError(f"unknown model {net_cfg.MODEL!r} (NET.MODEL); valid: {', '.join(MODELS)}")
    backbone = build_backbone(net_cfg.BACKBONE, pretrained=not net_cfg.FROM_SCRATCH, light_width=net_cfg.LIGHT_WIDTH,
                              last_stage=net_cfg.LAST_STAGE)
    if backbone.pretrained and init_weights:
        load_init_weights(backbone, net_cfg.PRE_WEIGHTS_PATH, net_cfg.BACKBONE)
    if net_cfg.MODEL == "ae":
        return SingleStageNet(backbone, num_classes, focal_p=net_cfg.FOCAL_P, focal_lambda=net_cfg.FOCAL_LAMBDA,
                              pamr_iter=net_cfg.PAMR_ITER, pamr_kernel=tuple(net_cfg.PAMR_KERNEL),
                              sg_psi=net_cfg.SG_PSI, head_width=net_cfg.HEAD_WIDTH)
    if net_cfg.HEAD_WIDTH != HEAD_WIDTH:
        raise UserError(f"NET.HEAD_WIDTH is {net_cfg.HEAD_WIDTH}, but the CAM baseline (NET.MODEL bsl) has no head "
                        f"of that kind: remove the key or set it to {HEAD_WIDTH}")
    return CAMNet(backbone, num_classes, bg_score=net_cfg.BG_SCORE)


def load_trained_model(net_cfg, num_classes: int, snapshot: str) -> nn.Module:
    """The model NET describes with every tensor from ``snapshot`` (strict keys), on the CPU. No ImageNet file is
    read, so inference and evaluation need only the snapshot."""
    model = build_model(net_cfg, num_classes=num_classes, init_weights=False)
    load_snapshot(model, snapshot)
    return model


__all__ = ["MODELS", "build_model", "load_trained_model"]
