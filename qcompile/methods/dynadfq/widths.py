"""Switch a multi-width model to one bit configuration: per layer, the width of its weights and its input.

A configuration is ``{layer name: (weight bits, input bits)}`` over the model's multi-width layers (those
whose quantizers are :class:`NestedWeightQuantizer` / :class:`MultiBitActivationQuantizer`), or one width
for all. Setting it changes only which width each quantizer uses — the stored weights and the frozen
activation ranges stay — so exporting after :func:`set_widths` writes the static model of that
configuration, and the bit selector will set one per image the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from qcompile.errors import ConfigError
from qcompile.methods.dynadfq.activation import MultiBitActivationQuantizer
from qcompile.methods.dynadfq.nested import NestedWeightQuantizer
from qcompile.quantized_ops import QuantizedOp


def multi_width_layers(model: nn.Module) -> dict[str, QuantizedOp]:
    """The quantized ops whose weight quantizer is nested (multi-width), by qualified name."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, QuantizedOp) and isinstance(m.weight_quantizer, NestedWeightQuantizer)}


def current_widths(model: nn.Module) -> dict[str, tuple[int, int | None]]:
    return {name: (op.weight_quantizer.bits, op.input_quantizer.bits if op.input_quantizer is not None else None)
            for name, op in multi_width_layers(model).items()}


def set_widths(model: nn.Module, widths: Mapping[str, tuple[int, int | None]] | int) -> None:
    """Use ``widths`` (a configuration, or one width for every layer and input). Every multi-width layer
    must be named; a width outside a layer's candidates is a :class:`ConfigError` and changes nothing."""
    layers = multi_width_layers(model)
    if isinstance(widths, int):
        widths = {name: (widths, widths if op.input_quantizer is not None else None) for name, op in layers.items()}
    missing, unknown = sorted(set(layers) - set(widths)), sorted(set(widths) - set(layers))
    if missing or unknown:
        raise ConfigError(f"a configuration must name every multi-width layer: missing {missing}, unknown {unknown}",
                          hint=f"name each of: {', '.join(layers)}")
    for name, (w_bits, a_bits) in widths.items():  # check everything before changing anything
        op = layers[name]
        if w_bits not in op.weight_quantizer.candidates:
            raise ConfigError(f"{name}: weight width {w_bits} is not a candidate {list(op.weight_quantizer.candidates)}",
                              hint="choose a candidate width")
        aq = op.input_quantizer
        available = None if aq is None else aq.candidates if isinstance(aq, MultiBitActivationQuantizer) else (aq.bits,)
        if (available is None) != (a_bits is None) or (available is not None and a_bits not in available):
            raise ConfigError(f"{name}: input width {a_bits} is not available for this layer",
                              hint=f"give {'None (its input is float)' if available is None else list(available)}")
    for name, (w_bits, a_bits) in widths.items():
        layers[name].weight_quantizer.set_bits(w_bits)
        if isinstance(layers[name].input_quantizer, MultiBitActivationQuantizer):
            layers[name].input_quantizer.set_bits(a_bits)
