"""DoReFa k-bit weight quantizer (Zhou et al. 2016).

W̃ = tanh(W) / (2·max|tanh W|) + ½ ∈ [0, 1] (max detached), i = round((2^k − 1)·W̃),
Ŵ = 2i/(2^k − 1) − 1 ∈ [−1, 1]. We factor Ŵ = (2i − n)·(1/n) with n = 2^k − 1, so the integer
domain holds the odd integers 2i − n and the stored codes are the k-bit i (decode: 2·i − n).
At k = 1, Ŵ = sign(W) with no scale (a following BatchNorm absorbs it).
"""

from __future__ import annotations

import torch

from qcompile.quantizers.base import WeightQuantizer
from qcompile.quantizers.codes import QuantCodes, int_range
from qcompile.quantizers.ste import round_ste


def dorefa_pre_quantize(w: torch.Tensor) -> torch.Tensor:
    """A(W) = tanh(W)/(2·max|tanh W|) + ½, the max held constant in backward."""
    t = torch.tanh(w)
    m = t.detach().abs().max().clamp_min(1e-12)
    return t / (2 * m) + 0.5


def dorefa_calibration(w: torch.Tensor) -> torch.Tensor:
    """∂Ŵ/∂W under the STE: (1 − tanh²W) / max|tanh W| (Chen, Wang & Pan 2019, Eq. 4)."""
    t = torch.tanh(w)
    return (1 - t * t) / t.abs().max().clamp_min(1e-12)


class DoReFaQuantizer(WeightQuantizer):
    per_channel = False
    sign_symmetric = False  # W̃ ∈ [0, 1], ½ at W = 0

    def __init__(self, bits: int):
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"DoReFa supports 1..8 bits, got {bits}")
        self.bits = bits
        self.levels = int_range(bits, signed=False)[1]  # n = 2^k − 1

    def quantize_pre(self, w_tilde: torch.Tensor) -> torch.Tensor:
        """Integer domain of Q(W̃): 2·round(n·W̃) − n, STE through the rounding."""
        return 2 * round_ste(w_tilde * self.levels) - self.levels

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(1.0 / self.levels, dtype=torch.float32, device=like.device)

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantize_pre(dorefa_pre_quantize(w)), self.scale(w)

    def codes(self, w: torch.Tensor) -> QuantCodes:
        with torch.no_grad():
            ints, scale = self.decompose(w)
        return QuantCodes(
            codes=((ints + self.levels) / 2).round().to(torch.int64),
            scale=scale,
            zero_point=torch.zeros((), dtype=torch.int64),
            bits=self.bits,
            signed=False,
            multiplier=2,
            offset=-self.levels,
        )

    def describe(self) -> str:
        return f"dorefa {self.bits}b"
