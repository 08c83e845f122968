"""Activation quantizer with a calibrated range: EMA of batch min/max while observing, then frozen.

Unsigned (inputs known non-negative, e.g. after ReLU): codes in [0, 2^b − 1], scale = max/(2^b − 1).
Signed: symmetric, codes in [−2^(b−1), 2^(b−1) − 1], scale = max|·|/(2^(b−1) − 1). The zero point is
always 0, so the integer domain is the codes themselves and export needs only Div, Round and a
Clip to the exact [qmin, qmax] range — a 4-bit activation stays 4-bit in ONNX.
"""

from __future__ import annotations

import torch

from qcompile import distributed
from qcompile.errors import ExportError
from qcompile.quantizers.base import Quantizer
from qcompile.quantizers.codes import QuantCodes, int_range
from qcompile.quantizers.ste import round_ste


class ActivationQuantizer(Quantizer):
    axis = None

    def __init__(self, bits: int, signed: bool, momentum: float = 0.1):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"activation quantizers support 2..8 bits, got {bits}")
        self.bits, self.signed, self.momentum = bits, signed, momentum
        self.qmin, self.qmax = int_range(bits, signed)
        self.register_buffer("running_min", torch.zeros(()))
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("calibrated", torch.tensor(False))
        self.register_buffer("frozen", torch.tensor(False))

    def observe(self, x: torch.Tensor) -> None:
        # Under several ranks: the range of the whole global batch, so every rank keeps the same EMA.
        lo, hi = distributed.reduce_range(x.detach().min().float(), x.detach().max().float())
        if not bool(self.calibrated):
            self.running_min.copy_(lo)
            self.running_max.copy_(hi)
            self.calibrated.fill_(True)
        else:
            self.running_min.lerp_(lo, self.momentum)
            self.running_max.lerp_(hi, self.momentum)

    def reset(self) -> None:
        """Forget the observed range: the next observation starts it afresh (not an EMA step from it)."""
        self.calibrated.fill_(False)

    def freeze(self) -> None:
        self.frozen.fill_(True)

    def unfreeze(self) -> None:
        self.frozen.fill_(False)

    def settled(self) -> bool:
        """Calibrated and no longer moving (frozen, or not observing): a range others may requantise to."""
        return bool(self.calibrated) and (not self.training or bool(self.frozen))

    def scale(self) -> torch.Tensor:
        if not bool(self.calibrated):
            raise ExportError(
                "an activation quantizer has no calibrated range",
                hint="run the model on data first (compile with --data, or CompiledModel.calibrate(data))",
            )
        if self.signed:
            bound = torch.maximum(self.running_min.abs(), self.running_max.abs())
        else:
            bound = self.running_max.clamp_min(0)
        return torch.where(bound > 0, bound / self.qmax, torch.ones_like(bound)).to(torch.float32)

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.frozen):
            self.observe(x)
        scale = self.scale()
        return torch.clamp(round_ste(x / scale), self.qmin, self.qmax), scale

    def codes(self, x: torch.Tensor) -> QuantCodes:
        with torch.no_grad():
            scale = self.scale()
            ints = torch.clamp(torch.round(x / scale), self.qmin, self.qmax)
        return QuantCodes(
            codes=ints.to(torch.int64),
            scale=scale,
            zero_point=torch.zeros((), dtype=torch.int64),
            bits=self.bits,
            signed=self.signed,
        )

    def describe(self) -> str:
        return f"act {'int' if self.signed else 'uint'}{self.bits}"

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, frozen={bool(self.frozen)}"
