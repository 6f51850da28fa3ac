"""Classification criteria (SPEC 6): ``get_criterion(NET.LOSS)(cls [B,C-1], labels [B,C-1]) -> scalar``."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import UserError

CRITERIA = ("SoftMargin", "Hinge")


def multilabel_hinge(cls: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label hinge loss: the 0/1 labels [B,K] become PyTorch's ``multilabel_margin_loss`` target (indices
    of the positive classes first, then -1), averaged over the batch."""
    order = torch.argsort(labels, dim=1, descending=True, stable=True)  # positive classes first
    n_pos = labels.sum(1, keepdim=True).long()
    first = torch.arange(labels.shape[1], device=labels.device)[None] < n_pos  # [B,K]
    target = torch.where(first, order, torch.full_like(order, -1))
    return F.multilabel_margin_loss(cls, target)


def get_criterion(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """"SoftMargin": mean over classes and batch of -[y log sigmoid(x) + (1-y) log sigmoid(-x)]; "Hinge": the
    multi-label hinge loss."""
    if name == "SoftMargin":
        return nn.MultiLabelSoftMarginLoss()
    if name == "Hinge":
        return multilabel_hinge
    raise UserError(f"unknown classification loss {name!r} (NET.LOSS); valid: {', '.join(CRITERIA)}")
