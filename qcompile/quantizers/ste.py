"""Straight-through estimators.

Rounding is done by autograd Functions (not ``x + (round(x) - x).detach()``) so the forward value
is exactly ``torch.round(x)``: the exported integer codes must equal what training computed.
The gate is the hard-tanh STE (Courbariaux et al. 2016; as in Chen, Wang & Pan 2019): the gradient passes where
``|x| <= limit`` and is zero elsewhere; ``limit=None`` passes it everywhere.
"""

from __future__ import annotations

import torch


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _SignSTE(torch.autograd.Function):
    """sign with sign(0) = +1 (binary codes must be two-valued); gradient gated by |x| <= 1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, limit: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.limit = limit
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        if ctx.limit is None:
            return grad, None
        return grad * (x.abs() <= ctx.limit).to(grad.dtype), None


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return _RoundSTE.apply(x)


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity backward (mid-rise grids: floor(x) + ½ is the nearest half-integer)."""
    return _FloorSTE.apply(x)


def sign_ste(x: torch.Tensor, limit: float | None = 1.0) -> torch.Tensor:
    """±1 forward; gradient passed where |x| <= limit (the BinaryConnect/BWN STE)."""
    return _SignSTE.apply(x, limit)
