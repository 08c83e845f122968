"""Generalized divisive normalization (Ballé, Laparra & Simoncelli 2016), the nonlinearity of
learned image codecs: ``y_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²)`` (GDN) and its approximate inverse
``y_i = x_i · sqrt(β_i + Σ_j γ_ij x_j²)`` (IGDN, in the decoder).

β and γ must stay non-negative (β > 0): they are stored reparametrised, as Ballé et al. do, by
``θ = lower_bound(θ', sqrt(min + p))² − p`` with a small pedestal p = 2⁻¹⁸, which keeps the gradient
alive near zero (a plain clamp would freeze a parameter that touches the bound).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qcompile.codec.entropy import lower_bound

_PEDESTAL = 2.0 ** -18


class _NonNegative(nn.Module):
    """Stores θ' with θ = max(θ', sqrt(min + p))² − p ≥ min."""

    def __init__(self, initial: torch.Tensor, minimum: float = 0.0):
        super().__init__()
        self.bound = (minimum + _PEDESTAL) ** 0.5
        self.raw = nn.Parameter(torch.sqrt(torch.clamp_min(initial + _PEDESTAL, _PEDESTAL)))

    def forward(self) -> torch.Tensor:
        return lower_bound(self.raw, self.bound) ** 2 - _PEDESTAL


class GDN(nn.Module):
    """GDN over the channels of [N, C, H, W]; ``inverse=True`` gives IGDN."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = bool(inverse)
        self.beta = _NonNegative(torch.ones(channels), beta_min)
        self.gamma = _NonNegative(gamma_init * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma()
        norm = F.conv2d(x * x, gamma.reshape(*gamma.shape, 1, 1), self.beta())
        norm = torch.sqrt(norm)
        return x * norm if self.inverse else x / norm
