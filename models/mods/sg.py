"""Stochastic Gate (SPEC 5.6): an element-wise random mix of deep and shallow features in training, a fixed convex
mix at test time."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_KEEP = 1e-8


def stochastic_gate(deep: torch.Tensor, shallow: torch.Tensor, psi: float, training: bool) -> torch.Tensor:
    """deep, shallow [B,C,h,w] -> [B,C,h,w].

    Training: r ~ Bernoulli(1 - psi) per element, ``r (deep - psi shallow) / (1 - psi) + (1 - r) shallow``, whose
    expectation is ``deep``. Test: ``(1 - psi) deep + psi shallow`` (SPEC 5.6, not the expectation).
    The mask is drawn as ``(1 - psi) dropout(ones, psi)`` (SPEC 5.6), so that a seed gives the random stream of
    SPEC appendix C.
    """
    if deep.shape[1] != shallow.shape[1]:
        raise ValueError(f"stochastic gate needs equal channels, got {deep.shape[1]} and {shallow.shape[1]}")
    if not training:
        return (1 - psi) * deep + psi * shallow
    r = (1 - psi) * F.dropout(torch.ones_like(deep), p=psi, training=True)
    return r * (deep - psi * shallow) / max(MIN_KEEP, 1 - psi) + (1 - r) * shallow


class StochasticGate(nn.Module):
    def __init__(self, psi: float = 0.3):
        super().__init__()
        self.psi = float(psi)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        return stochastic_gate(deep, shallow, self.psi, self.training)
