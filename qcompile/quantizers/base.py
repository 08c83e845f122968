"""The one interface every quantizer implements — STE baselines and method plug-ins alike.

A quantizer maps a float tensor to ``ints * scale``:
- ``decompose(x)`` returns ``(ints, scale)``, differentiable through the quantizer's backward rule;
  quantized ops compute in this integer domain (see ``qcompile.quantized_ops``), which is what
  makes ONNX Runtime reproduce PyTorch exactly;
- ``forward(x)`` is the fake-quantized tensor ``ints * scale``;
- ``codes(x)`` returns the integer codes and decode parameters (:class:`QuantCodes`), equal bit
  for bit to what ``forward`` produced.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from qcompile.quantizers.codes import QuantCodes


def along_axis(t: torch.Tensor, like: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Reshape a per-channel vector (or scalar) so it broadcasts against ``like`` on ``axis``."""
    if t.dim() == 0:
        return t
    shape = [1] * like.dim()
    shape[axis] = -1
    return t.reshape(shape)


class Quantizer(nn.Module, abc.ABC):
    """Base class. Subclasses set ``bits`` and implement ``decompose`` and ``codes``."""

    bits: int
    axis: int | None = None  # channel axis of a per-channel scale, None when per-tensor

    @abc.abstractmethod
    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ints, scale)`` with ``ints`` integer-valued floats and ``scale`` scalar or [C]."""

    @abc.abstractmethod
    def codes(self, x: torch.Tensor) -> QuantCodes:
        """Integer codes of ``x`` exactly matching ``forward`` (eval mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ints, scale = self.decompose(x)
        return ints * along_axis(scale, ints, self.axis or 0)

    def describe(self) -> str:
        """A short human-readable description for reports and ONNX metadata."""
        return f"{type(self).__name__}({self.bits}b)"


class WeightQuantizer(Quantizer):
    """A quantizer of a Conv/Linear weight. Its channel axis is 0 (output channels).

    ``sign_symmetric``: the pre-quantized weight W̃ that the grid is applied to is centred on zero
    (W̃ = W or W/s), so a code's sign is W's sign and W = 0 is where codes change sign. Learned
    gradients that scale with W̃ vanish there and can never move a weight across zero (a method plug-in
    that learns such a gradient reads this flag); DoReFa's W̃ lies in [0, 1] with ½ at W = 0.
    """

    per_channel: bool = False
    sign_symmetric: bool = False

    @property
    def axis(self) -> int | None:  # type: ignore[override]
        return 0 if self.per_channel else None


def binary_codes(ints: torch.Tensor, scale: torch.Tensor, axis: int | None) -> QuantCodes:
    """Codes of a ±1 tensor: bit b ∈ {0,1} decodes to 2b − 1."""
    bits = ((ints.detach() + 1) / 2).to(torch.int64)
    return QuantCodes(
        codes=bits,
        scale=scale.detach().to(torch.float32),
        zero_point=torch.zeros_like(scale, dtype=torch.int64),
        bits=1,
        signed=False,
        multiplier=2,
        offset=-1,
        axis=axis,
    )


def reduce_per_channel(x: torch.Tensor, per_channel: bool, fn: str) -> torch.Tensor:
    """amax / mean|·| / amin / amax over everything, or over all but axis 0."""
    x = x.detach()
    dims = tuple(range(1, x.dim())) if per_channel else tuple(range(x.dim()))
    if fn == "absmax":
        return x.abs().amax(dim=dims)
    if fn == "absmean":
        return x.abs().mean(dim=dims)
    if fn == "min":
        return x.amin(dim=dims)
    if fn == "max":
        return x.amax(dim=dims)
    raise ValueError(fn)
