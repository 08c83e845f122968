"""Pass: turn each ``qcompile::Dither`` node into a tensor the runtime regenerates (never stored).

A frozen op whose codes carry a seeded dither exports ``DecodeWeight(...) + qcompile::Dither`` (see
:mod:`qcompile.export.frozen_ops`). Rules:

1. each Dither node of the main graph (or of its subgraphs) is replaced by an initializer of the main
   graph named by its ``name`` attribute (the dither's node id, e.g. ``conv1:weight``), float32, of its
   ``shape``, whose data is external at :data:`~qcompile.runtime.dithered.DITHER_LOCATION`: the file
   holds its name, type and shape only, and the runtime supplies the values at load
   (:mod:`qcompile.runtime.dithered`, from the manifest's ``dither`` record);
2. a Dither node inside a model-local function is an error (functions have no initializers);
3. the ``qcompile`` opset import is dropped once no node and no function uses that domain.

It runs after ``CompactModel``, so the names the runtime looks up are never shortened.
"""

from __future__ import annotations

import onnx_ir as ir

from qcompile.export.frozen_ops import DITHER_OP
from qcompile.runtime.dithered import DITHER_LOCATION

DOMAIN, OP_TYPE = DITHER_OP.split("::")


def _is_dither(node: ir.Node) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


class LowerDither(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for function in model.functions.values():
            if any(_is_dither(n) for n in ir.traversal.RecursiveGraphIterator(function)):
                raise ir.passes.PassError(f"{DITHER_OP} inside function {function.name}: functions hold no tensors")
        sites = [n for n in ir.traversal.RecursiveGraphIterator(model.graph) if _is_dither(n)]
        for node in sites:
            name = node.attributes["name"].as_string()
            shape = ir.Shape(node.attributes["shape"].as_ints())
            tensor = ir.ExternalTensor(DITHER_LOCATION, offset=None, length=None, dtype=ir.DataType.FLOAT,
                                       shape=shape, name=name)
            value = ir.Value(name=name, shape=shape, type=ir.TensorType(ir.DataType.FLOAT), const_value=tensor)
            model.graph.register_initializer(value)
            ir.convenience.replace_all_uses_with(node.outputs[0], value)
            node.graph.remove(node, safe=True)
        if sites and not self._uses_domain(model):
            model.opset_imports.pop(DOMAIN, None)
        return ir.passes.PassResult(model, modified=bool(sites))

    @staticmethod
    def _uses_domain(model: ir.Model) -> bool:
        graphs = [model.graph, *model.functions.values()]
        return any(n.domain == DOMAIN for g in graphs for n in ir.traversal.RecursiveGraphIterator(g))
