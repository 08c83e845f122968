"""A per-tensor activation quantizer usable at any candidate width, from one calibrated range.

The range (EMA of batch min/max, as :class:`~qcompile.quantizers.ActivationQuantizer`) is observed once,
then frozen; each width b derives its own scale from it (max/(2^b − 1) unsigned, max|·|/(2^(b−1) − 1)
signed). Activations are not stored, so they need no nesting: each width keeps the mid-tread grid with
an exact zero, which matters after a ReLU (half the inputs are 0). Switching the width with
:meth:`set_bits` changes only ``bits``, ``qmin`` and ``qmax``, so calibration, freezing and export treat
the quantizer at its width in use exactly like the core's.
"""

from __future__ import annotations

from collections.abc import Iterable

from qcompile.errors import ConfigError
from qcompile.methods.dynadfq.nested import candidate_widths
from qcompile.quantizers import ActivationQuantizer
from qcompile.quantizers.codes import int_range


class MultiBitActivationQuantizer(ActivationQuantizer):
    def __init__(self, candidates: Iterable[int], signed: bool, bits: int | None = None, momentum: float = 0.1):
        self.candidates = candidate_widths(candidates)
        super().__init__(self.candidates[-1], signed=signed, momentum=momentum)
        self.set_bits(self.candidates[-1] if bits is None else bits)

    def set_bits(self, bits: int) -> None:
        if bits not in self.candidates:
            raise ConfigError(f"width {bits} is not one of this layer's candidates {list(self.candidates)}",
                              hint=f"choose one of {', '.join(map(str, self.candidates))}")
        self.bits = bits
        self.qmin, self.qmax = int_range(bits, self.signed)

    def describe(self) -> str:
        return f"act {'int' if self.signed else 'uint'}{self.bits} of {{{','.join(map(str, self.candidates))}}}"
