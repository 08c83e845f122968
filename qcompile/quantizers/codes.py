"""Integer codes and the exact map that decodes them.

Every quantizer in qcompile factors its output as ``ints * scale`` where ``ints`` are small
integers (held in a float tensor) and ``scale`` is a per-tensor or per-output-channel float.
The integers are stored as *codes* in a k-bit container and decoded with

    ints = (codes - zero_point) * multiplier + offset

so the exporter can write ``codes`` as an INT4/INT2/... initializer feeding a DequantizeLinear
(scale = multiplier, zero_point) and an optional Add(offset). ``dequantize()`` is, bit for bit,
what the quantizer's forward produced in eval mode.

Universal quantization's seeded dither adds one more term, ``+ dither.numerators``: per-element
integers that are not stored but regenerated from (seed, node id, element index) by the shared-seed
generator (:mod:`qcompile.runtime.dither`), so the file still holds only the packed codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """[qmin, qmax] of ``bits``-bit codes: the one definition the quantizers (their grids, scales and clamps)
    and the codes' own checks use."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


@dataclass(frozen=True)
class Dither:
    """A seeded dither of one weight: ``numerators`` (int64, the weight's shape) are
    ``dither_numerators(seed, node, shape, levels)``; the decode adds them to the integers (whose
    ``multiplier`` is their denominator 2·levels, so ints = 2L·k + n stay integers)."""

    seed: int
    node: str
    levels: int
    numerators: torch.Tensor

    def record(self) -> dict:
        """What the artifact's manifest says about it; the runtime supplies the tensor named ``node``."""
        return {"node": self.node, "seed": self.seed, "levels": self.levels, "shape": list(self.numerators.shape)}


@dataclass(frozen=True)
class QuantCodes:
    """Codes of one tensor plus everything needed to decode them exactly.

    ``scale`` and ``zero_point`` are scalars (per-tensor) or vectors along ``axis``.
    """

    codes: torch.Tensor  # int64, values in [qmin, qmax]
    scale: torch.Tensor  # float32, shape [] or [C]
    zero_point: torch.Tensor  # int64, shape [] or [C]
    bits: int
    signed: bool
    multiplier: int = 1
    offset: int = 0
    axis: int | None = None
    dither: Dither | None = None  # regenerated per-element term of the decode (universal quantization)

    @property
    def qmin(self) -> int:
        return int_range(self.bits, self.signed)[0]

    @property
    def qmax(self) -> int:
        return int_range(self.bits, self.signed)[1]

    def _along_axis(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or self.axis is None:
            return t
        shape = [1] * self.codes.dim()
        shape[self.axis] = -1
        return t.reshape(shape)

    def integers(self) -> torch.Tensor:
        """The integer-valued float tensor the quantized op multiplies with (before scaling)."""
        zp = self._along_axis(self.zero_point)
        ints = (self.codes - zp) * self.multiplier + self.offset
        if self.dither is not None:
            ints = ints + self.dither.numerators.to(ints.device)
        return ints.to(torch.float32)

    def dequantize(self) -> torch.Tensor:
        return self.integers() * self._along_axis(self.scale)

    def validate(self) -> None:
        """Refuse codes that do not fit their container: never widen silently."""
        lo, hi = int(self.codes.min()), int(self.codes.max())
        if lo < self.qmin or hi > self.qmax:
            raise ValueError(
                f"codes span [{lo}, {hi}] but a {'signed' if self.signed else 'unsigned'} "
                f"{self.bits}-bit container holds [{self.qmin}, {self.qmax}]"
            )
