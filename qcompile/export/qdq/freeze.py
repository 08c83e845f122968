"""Pass: freeze an ``ort-int8`` graph for export (after ``StripForExport`` and ``FoldBatchNorm``).

Rules: (1) a ReLU right after an integer producer with an unsigned output grid is dropped (the grid's
saturation at code 0 already is the ReLU, and a Relu node would sit between DQ and Q); (2) an input that
comes straight from a producer on the same grid is marked ``on_grid`` (no second Q/DQ pair); (3) each
integer-kernel op, QuantAdd and QuantGlobalPool becomes its frozen module (:mod:`.frozen`); a weight-only
quantized op becomes the exact target's frozen op, as there is no integer kernel for it.
"""

from __future__ import annotations

import torch
from torch import fx

from qcompile.export.qdq.frozen import (FrozenIntegerConv, FrozenIntegerLinear, FrozenQuantAdd,
                                        FrozenQuantGlobalPool, Grid)
from qcompile.integer import arith
from qcompile.integer.modules import QuantAdd, QuantGlobalPool
from qcompile.passes.base import GraphPass
from qcompile.passes.freeze_for_export import checked_codes, freeze_op, layer_summary
from qcompile.passes.graph_utils import bypass_node, module_of, replace_submodule
from qcompile.passes.integer_kernels import is_relu
from qcompile.quantized_ops import QuantConv, QuantizedOp



def output_grid_of(m) -> object | None:
    """The quantizer an integer producer requantises to (None: not one, or float output)."""
    if isinstance(m, QuantizedOp):
        return m.output_quantizer if m.integer_kernel else None
    if isinstance(m, (QuantAdd, QuantGlobalPool)):
        return m.output_quantizer
    return None


@torch.no_grad()
def freeze_integer_op(name: str, op: QuantizedOp):
    codes, w_scale = checked_codes(name, op)
    iq = op.input_quantizer
    x_scale, w_eff = iq.scale(), op.output_scale(w_scale, None)
    bias = None if op.bias is None else arith.int32_bias(op.bias.detach(), x_scale, w_eff)
    frozen_type = FrozenIntegerConv if isinstance(op, QuantConv) else FrozenIntegerLinear
    frozen = frozen_type(op, codes, w_eff, None, x_scale, (iq.qmin, iq.qmax))
    out = None if op.output_quantizer is None else Grid(op.output_quantizer)
    frozen.init_kernel(bias, Grid(iq), out)
    return frozen.to(op.weight.device)


class FreezeIntegerKernels(GraphPass):
    def run(self, gm: fx.GraphModule):
        dropped = self._drop_folded_relus(gm)
        flags = self._on_grid_flags(gm)
        layers = []
        for node in gm.graph.nodes:
            m, name = module_of(gm, node), str(node.target)
            if isinstance(m, QuantizedOp):
                frozen = freeze_integer_op(name, m) if m.integer_kernel else freeze_op(name, m)
                layers.append(layer_summary(name, frozen))
            elif isinstance(m, QuantAdd):
                frozen = FrozenQuantAdd(Grid(m.a_quantizer), Grid(m.b_quantizer), Grid(m.output_quantizer), m.relu)
            elif isinstance(m, QuantGlobalPool):
                frozen = FrozenQuantGlobalPool(Grid(m.input_quantizer), Grid(m.output_quantizer))
            else:
                continue
            for attr, value in flags.get(node, {}).items():
                setattr(frozen, attr, value)
            replace_submodule(gm, name, frozen)
        gm.graph.lint()
        gm.recompile()
        return True, {"layers": layers, "dropped_relu": dropped}

    @staticmethod
    def _drop_folded_relus(gm: fx.GraphModule) -> list[str]:
        dropped = []
        for node in list(gm.graph.nodes):
            producer = node.args[0] if node.args else None
            if not (is_relu(gm, node) and isinstance(producer, fx.Node)):
                continue
            grid = output_grid_of(module_of(gm, producer))
            if grid is not None and not grid.signed:
                bypass_node(gm, node, producer)
                dropped.append(node.name)
        return dropped

    @staticmethod
    def _on_grid_flags(gm: fx.GraphModule) -> dict:
        """For each consumer node, the ``*_on_grid`` attributes to set on its frozen module."""
        def direct(arg, quantizer) -> bool:
            return isinstance(arg, fx.Node) and output_grid_of(module_of(gm, arg)) is quantizer

        flags = {}
        for node in gm.graph.nodes:
            m = module_of(gm, node)
            if isinstance(m, QuantizedOp) and m.integer_kernel:
                flags[node] = {"input_on_grid": direct(node.args[0], m.input_quantizer)}
            elif isinstance(m, QuantAdd):
                flags[node] = {"a_on_grid": direct(node.args[0], m.a_quantizer),
                               "b_on_grid": direct(node.args[1], m.b_quantizer)}
            elif isinstance(m, QuantGlobalPool):
                flags[node] = {"input_on_grid": direct(node.args[0], m.input_quantizer)}
        return flags
