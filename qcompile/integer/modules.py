"""The residual addition and global average pool of the ``ort-int8`` target.

Each owns (or shares, see ``passes.integer_kernels``) the quantizers of its inputs and output. Once
those ranges are settled (eval, or training after the ranges froze) it computes what onnxruntime's
QLinearAdd / QLinearGlobalAveragePool compute on the codes (:mod:`.arith`, straight-through rounding, so
QAT trains through it) and returns the output codes times their scale. While ranges are still observed
(calibration, the first QAT epochs) it is the float op between fake quantizers, so they see true values.
"""

from __future__ import annotations

import torch
from torch import nn

from qcompile.integer import arith
from qcompile.quantizers.activation import ActivationQuantizer
from qcompile.quantizers.ste import round_ste


def fake_quantize(q: ActivationQuantizer, x: torch.Tensor) -> torch.Tensor:
    ints, scale = q.decompose(x)
    return ints * scale


def grid(q: ActivationQuantizer) -> tuple:
    """``(scale, u8 zero point, qmin, qmax)``: signed 8-bit codes are stored as u8 with zero point 128."""
    return q.scale(), 128 if q.signed else 0, q.qmin, q.qmax


def codes_of(q: ActivationQuantizer, x: torch.Tensor) -> torch.Tensor:
    """The codes of a tensor already on ``q``'s grid (exact: it is codes · scale); straight-through gradient."""
    return torch.clamp(round_ste(x / q.scale()), q.qmin, q.qmax)


class QuantAdd(nn.Module):
    """``a + b`` (then ReLU when ``relu``) with both inputs and the output on 8-bit grids."""

    def __init__(self, a: ActivationQuantizer, b: ActivationQuantizer, out: ActivationQuantizer, relu: bool):
        super().__init__()
        self.a_quantizer, self.b_quantizer, self.output_quantizer = a, b, out
        self.relu = relu

    def integer_ready(self) -> bool:
        return all(q.settled() for q in (self.a_quantizer, self.b_quantizer,
                                                               self.output_quantizer))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        qa, qb, qc = self.a_quantizer, self.b_quantizer, self.output_quantizer
        if self.integer_ready():
            codes = arith.add_codes(codes_of(qa, a), grid(qa), codes_of(qb, b), grid(qb), grid(qc))
            return codes * qc.scale()
        y = fake_quantize(qa, a) + fake_quantize(qb, b)
        return fake_quantize(qc, torch.relu(y) if self.relu else y)

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


class QuantGlobalPool(nn.Module):
    """Global average pooling from ``input_quantizer``'s codes to ``output_quantizer``'s (NCHW, keeps dims)."""

    def __init__(self, input_quantizer: ActivationQuantizer, output_quantizer: ActivationQuantizer):
        super().__init__()
        self.input_quantizer, self.output_quantizer = input_quantizer, output_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qi, qo = self.input_quantizer, self.output_quantizer
        if qi.settled() and qo.settled():
            return arith.global_pool_codes(codes_of(qi, x), qi.scale(), qo.scale(), qo.qmin, qo.qmax) * qo.scale()
        x = fake_quantize(qi, x)
        return torch.mean(x.double(), dim=tuple(range(2, x.dim())), keepdim=True).to(x.dtype)
