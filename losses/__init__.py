"""Classification criteria (SPEC 6)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import UserError


def _hinge(cls: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label hinge: indices of positive classes first, padded with -1 (PyTorch's multilabel_margin_loss)."""
    order = torch.argsort(labels, dim=1, descending=True, stable=True)
    n_pos = labels.sum(1, keepdim=True).long()
    pos = torch.arange(labels.shape[1], device=labels.device)[None] < n_pos
    target = torch.where(pos, order, torch.full_like(order, -1))
    return F.multilabel_margin_loss(cls, target)


def get_criterion(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "SoftMargin":
        return nn.MultiLabelSoftMarginLoss()
    if name == "Hinge":
        return _hinge
    raise UserError(f"unknown classification loss {name!r} (NET.LOSS); valid: SoftMargin, Hinge")
