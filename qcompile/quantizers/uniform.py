"""Uniform (affine) weight quantizer: symmetric or asymmetric, per-tensor or per-channel, 1–8 bits.

Scales follow the weights (max-abs or min/max of the current tensor, detached), so the codes
of a trained model are a pure function of its weights. Symmetric 1-bit is the binary {−s, +s}
quantizer with s = mean|W| (the L2-optimal binary scale), since a symmetric 1-bit grid has no
non-zero level.
"""

from __future__ import annotations

import torch

from qcompile.quantizers.base import WeightQuantizer, along_axis, binary_codes, reduce_per_channel
from qcompile.quantizers.codes import QuantCodes, int_range
from qcompile.quantizers.ste import round_ste, sign_ste


class UniformQuantizer(WeightQuantizer):
    def __init__(self, bits: int, symmetric: bool = True, per_channel: bool = True):
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"uniform quantizer supports 1..8 bits, got {bits}")
        self.bits, self.symmetric, self.per_channel = bits, symmetric, per_channel
        self.qmax_signed = int_range(bits, signed=True)[1]  # symmetric grid: [-qmax, qmax]
        self.qmax_unsigned = int_range(bits, signed=False)[1]  # asymmetric codes: [0, qmax]
        self.sign_symmetric = symmetric  # W̃ = W/s; the asymmetric grid's zero point is data-dependent

    def _params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) per tensor or per channel, both detached."""
        if self.symmetric:
            if self.bits == 1:
                scale = reduce_per_channel(w, self.per_channel, "absmean")
            else:
                scale = reduce_per_channel(w, self.per_channel, "absmax") / self.qmax_signed
            zero_point = torch.zeros_like(scale, dtype=torch.int64)
        else:
            # the grid must contain 0 so the zero point is an integer code in [0, 2^b − 1]
            lo = reduce_per_channel(w, self.per_channel, "min").clamp_max(0)
            hi = reduce_per_channel(w, self.per_channel, "max").clamp_min(0)
            scale = (hi - lo) / self.qmax_unsigned
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero_point = torch.clamp(torch.round(-lo / scale), 0, self.qmax_unsigned).to(torch.int64)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
        return scale, zero_point

    def _ints(self, w: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        s = along_axis(scale, w, 0)
        if self.symmetric and self.bits == 1:
            return sign_ste(w, limit=None)
        if self.symmetric:
            return torch.clamp(round_ste(w / s), -self.qmax_signed, self.qmax_signed)
        zp = along_axis(zero_point, w, 0).to(w.dtype)
        q = torch.clamp(round_ste(w / s) + zp, 0, self.qmax_unsigned)
        return q - zp

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, zero_point = self._params(w)
        return self._ints(w, scale, zero_point), scale

    def codes(self, w: torch.Tensor) -> QuantCodes:
        with torch.no_grad():
            scale, zero_point = self._params(w)
            ints = self._ints(w, scale, zero_point)
        if self.symmetric and self.bits == 1:
            return binary_codes(ints, scale, self.axis)
        zp = along_axis(zero_point, ints, 0)
        return QuantCodes(
            codes=ints.to(torch.int64) + (0 if self.symmetric else zp),
            scale=scale,
            zero_point=zero_point,
            bits=self.bits,
            signed=self.symmetric,
            axis=self.axis,
        )

    def describe(self) -> str:
        kind = "sym" if self.symmetric else "asym"
        gran = "per-channel" if self.per_channel else "per-tensor"
        return f"uniform {kind} {gran} {self.bits}b"
