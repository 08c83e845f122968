"""Quantizers: one interface (:class:`Quantizer`), several rules, and a factory by name."""

from __future__ import annotations

from qcompile.errors import ConfigError
from qcompile.quantizers.activation import ActivationQuantizer
from qcompile.quantizers.base import Quantizer, WeightQuantizer
from qcompile.quantizers.block import BlockQuantizer
from qcompile.quantizers.bwn import BWNQuantizer
from qcompile.quantizers.codes import QuantCodes
from qcompile.quantizers.dorefa import DoReFaQuantizer
from qcompile.quantizers.uniform import UniformQuantizer

WEIGHT_QUANTIZERS = ("uniform", "uniform-asym", "dorefa", "bwn")


def make_weight_quantizer(kind: str, bits: int, per_channel: bool = True,
                          group_size: int | None = None) -> WeightQuantizer:
    """Build a weight quantizer from a small explicit config (no injection magic). ``group_size``: a
    Linear weight in blocks along its inputs (symmetric uniform only; see :mod:`.block`)."""
    if group_size is not None:
        if kind != "uniform":
            raise ConfigError(f"--group-size works with --quantizer uniform, got {kind!r}",
                              hint="drop --group-size or use --quantizer uniform")
        return BlockQuantizer(bits, group_size)
    if kind == "uniform":
        return UniformQuantizer(bits, symmetric=True, per_channel=per_channel)
    if kind == "uniform-asym":
        return UniformQuantizer(bits, symmetric=False, per_channel=per_channel)
    if kind == "dorefa":
        return DoReFaQuantizer(bits)
    if kind == "bwn":
        if bits != 1:
            raise ConfigError(f"BWN is a 1-bit quantizer, got --w-bits {bits}", hint="use --w-bits 1, or --quantizer uniform/dorefa for k-bit")
        return BWNQuantizer(per_channel=per_channel)
    raise ConfigError(f"unknown weight quantizer {kind!r}", hint=f"choose one of {', '.join(WEIGHT_QUANTIZERS)}")


__all__ = [
    "ActivationQuantizer", "BlockQuantizer", "BWNQuantizer", "DoReFaQuantizer", "QuantCodes", "Quantizer",
    "UniformQuantizer", "WeightQuantizer", "WEIGHT_QUANTIZERS", "make_weight_quantizer",
]
