"""BitOPs: the hardware-independent cost of a quantized forward pass, per layer and in total.

    BitOPs = Σ_l MACs_l · b^w_l · b^a_l

with MACs per sample at the compiled input shape (what ``qcompile inspect`` reports), b^w the weight width
and b^a the width of the layer's input. A float weight or a float input counts 32 bits. The bit selector
will pick (b^w_l, b^a_l) per image; :func:`bitops` prices any such choice, and a selector's own cost is to
be reported beside it, not hidden in it. CPU onnxruntime computes dequantized float, so BitOPs do not
predict its latency: they measure what integer hardware would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FLOAT_BITS = 32


@dataclass(frozen=True)
class LayerCost:
    name: str
    macs: int
    w_bits: int | None  # None: float
    a_bits: int | None

    def bitops(self, w_bits: int | None = None, a_bits: int | None = None) -> int:
        """At the given widths (default: the layer's own); None means float (32 bits)."""
        w = self.w_bits if w_bits is None else w_bits
        a = self.a_bits if a_bits is None else a_bits
        return self.macs * (w or FLOAT_BITS) * (a or FLOAT_BITS)


def layer_costs(sites: Sequence[Mapping[str, Any]]) -> list[LayerCost]:
    """From ``CompiledModel.inspect()["sites"]`` (name, macs, w_bits, a_bits per Conv/Linear)."""
    return [LayerCost(s["name"], int(s["macs"] or 0), s["w_bits"], s["a_bits"]) for s in sites]


def bitops(costs: Sequence[LayerCost], widths: Mapping[str, tuple[int, int]] | None = None) -> int:
    """Total BitOPs per sample; ``widths`` overrides (w_bits, a_bits) of the layers it names."""
    widths = widths or {}
    unknown = sorted(set(widths) - {c.name for c in costs})
    if unknown:
        raise KeyError(f"no quantized layer named {', '.join(unknown)}")
    return sum(c.bitops(*widths.get(c.name, (None, None))) for c in costs)
