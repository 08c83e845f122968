"""BWN binary weights (Rastegari et al. 2016): Ŵ = α·sign(W), α = mean|W| (detached).

The STE passes the gradient where |W| ≤ 1, so the baseline's W-gradient is α·g·1{|W| ≤ 1}
(the hard-tanh STE, as in Chen, Wang & Pan, NeurIPS 2019). ``alpha_in_grad=False`` divides α back out of
the gradient — a control for comparisons with learned gradients, not a training default.
"""

from __future__ import annotations

import torch

from qcompile.quantizers.base import WeightQuantizer, binary_codes, reduce_per_channel
from qcompile.quantizers.codes import QuantCodes
from qcompile.quantizers.ste import sign_ste


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(factor)
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


class BWNQuantizer(WeightQuantizer):
    sign_symmetric = True  # W̃ = W

    def __init__(self, per_channel: bool = False, alpha_in_grad: bool = True):
        super().__init__()
        self.bits = 1
        self.per_channel = per_channel
        self.alpha_in_grad = alpha_in_grad

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        return reduce_per_channel(w, self.per_channel, "absmean").clamp_min(1e-12).to(torch.float32)

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alpha(w)
        ints = sign_ste(w, limit=1.0)
        if not self.alpha_in_grad:
            inv = 1.0 / alpha if alpha.dim() == 0 else (1.0 / alpha).reshape([-1] + [1] * (w.dim() - 1))
            ints = _ScaleGrad.apply(ints, inv)
        return ints, alpha

    def codes(self, w: torch.Tensor) -> QuantCodes:
        with torch.no_grad():
            ints, alpha = self.decompose(w)
        return binary_codes(ints, alpha, self.axis)

    def describe(self) -> str:
        return "bwn 1b" + (" per-channel" if self.per_channel else "")
