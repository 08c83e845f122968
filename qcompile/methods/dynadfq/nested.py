"""Nested multi-width weight codes: one stored B-bit code per weight serves every width b ≤ B.

The grid is *mid-rise* (no level at zero): per output channel c, with B the widest candidate,

    s_c   = max|W_c| / (2^(B−1) − ½)                          step at B bits
    k_B   = clamp(floor(W / s_c), −2^(B−1), 2^(B−1) − 1)      the stored B-bit two's-complement code
    k_b   = k_B >> (B − b)  =  floor(k_B / 2^(B−b))            its top b bits (arithmetic shift)
    Ŵ_b   = (k_b + ½) · 2^(B−b) · s_c  =  (2·k_b + 1) · s_c · 2^(B−b−1)

so the b-bit weight is the centre of the 2^(B−b) B-bit bins its code merges: a b-bit mid-rise grid of
step 2^(B−b)·s_c, symmetric about zero with 2^b levels, whose top level (2^(b−1) − ½)·2^(B−b)·s_c is
max|W_c| at b = B and slightly inside it below (0.8·max|W_c| at b = 2 of B = 4). floor(floor(x)/2^d) =
floor(x/2^d), so k_b is also what quantising W directly at step 2^(B−b)·s_c gives: truncation loses
nothing beyond the coarser grid itself. Mid-rise rather than mid-tread (round, a zero level) because
truncating a symmetric mid-tread code is not a mid-tread code of fewer bits (its range goes one-sided
and a double rounding biases it); a zero weight costs half a step.

Export: the integers are the odd numbers 2·k_b + 1 (exact in float32), stored as the signed b-bit
codes k_b with ``multiplier=2, offset=1`` and scale s_c·2^(B−b−1) — the existing packed export at any
one width. The straight-through estimator passes the gradient through both floors (identity),
zero outside the clamp.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from qcompile.errors import ConfigError
from qcompile.quantizers.base import WeightQuantizer, along_axis, reduce_per_channel
from qcompile.quantizers.codes import QuantCodes, int_range
from qcompile.quantizers.ste import floor_ste

WIDTHS = range(2, 9)


def candidate_widths(bits: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct widths, each in 2..8 (the flag is e.g. ``--bits 2,3,4``)."""
    widths = tuple(sorted(set(int(b) for b in bits)))
    if not widths or any(b not in WIDTHS for b in widths):
        raise ConfigError(f"candidate bit widths {list(bits)} must be integers from 2 to 8",
                          hint="e.g. --bits 2,3,4 (or one width, e.g. --bits 4)")
    return widths


def truncate_codes(codes: QuantCodes, bits: int) -> QuantCodes:
    """The ``bits``-bit codes nested in wider nested codes: k_b = k_B >> (B − b), scale × 2^(B − b)."""
    if codes.multiplier != 2 or codes.offset != 1 or not codes.signed:
        raise ValueError("not nested mid-rise codes (multiplier 2, offset 1, signed)")
    shift = codes.bits - bits
    if not 1 <= bits <= codes.bits:
        raise ValueError(f"cannot take {bits} bits of {codes.bits}-bit codes")
    return QuantCodes(codes=torch.bitwise_right_shift(codes.codes, shift), scale=codes.scale * float(1 << shift),
                      zero_point=codes.zero_point, bits=bits, signed=True, multiplier=2, offset=1, axis=codes.axis)


class NestedWeightQuantizer(WeightQuantizer):
    """Per-channel weights at any width of ``candidates``; ``bits`` is the width in use (default: the widest).

    ``set_bits(b)`` switches the width; :meth:`nested_codes` are the stored (widest) codes, whatever the
    width in use; :meth:`codes` are those of the width in use (for a static export at that width)."""

    sign_symmetric = True  # W̃ = W/s is centred on zero and the code's sign is W's

    def __init__(self, candidates: Iterable[int], bits: int | None = None, per_channel: bool = True):
        super().__init__()
        self.candidates = candidate_widths(candidates)
        self.max_bits = self.candidates[-1]
        self.per_channel = per_channel
        self.set_bits(self.max_bits if bits is None else bits)

    def set_bits(self, bits: int) -> None:
        if bits not in self.candidates:
            raise ConfigError(f"width {bits} is not one of this layer's candidates {list(self.candidates)}",
                              hint=f"choose one of {', '.join(map(str, self.candidates))}")
        self.bits = bits

    def step(self, w: torch.Tensor) -> torch.Tensor:
        """s_c = max|W_c| / (2^(B−1) − ½), detached (an all-zero channel gets step 1)."""
        bound = reduce_per_channel(w, self.per_channel, "absmax")
        step = bound / ((1 << (self.max_bits - 1)) - 0.5)
        return torch.where(step > 0, step, torch.ones_like(step)).to(torch.float32)

    def _max_codes(self, w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        lo, hi = int_range(self.max_bits, signed=True)
        return torch.clamp(floor_ste(w / along_axis(step, w, 0)), lo, hi)

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.step(w)
        shift = self.max_bits - self.bits
        k = floor_ste(self._max_codes(w, step) / float(1 << shift))
        return 2 * k + 1, step * (2.0 ** (shift - 1))

    def nested_codes(self, w: torch.Tensor) -> QuantCodes:
        """The stored codes: widest width, from which every candidate width is a right shift away."""
        with torch.no_grad():
            step = self.step(w)
            k = self._max_codes(w, step)
        return QuantCodes(codes=k.to(torch.int64), scale=step * 0.5,
                          zero_point=torch.zeros_like(step, dtype=torch.int64), bits=self.max_bits, signed=True,
                          multiplier=2, offset=1, axis=self.axis)

    def codes(self, w: torch.Tensor) -> QuantCodes:
        return truncate_codes(self.nested_codes(w), self.bits)

    def describe(self) -> str:
        return f"nested mid-rise {'per-channel' if self.per_channel else 'per-tensor'} {self.bits}b of " \
               f"{{{','.join(map(str, self.candidates))}}}"
