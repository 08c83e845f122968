"""Pass: remove opset imports of custom domains that no node uses any more."""

from __future__ import annotations

import onnx_ir as ir


class DropUnusedOpsetImports(ir.passes.InPlacePass):
    """Drop the ``qcompile`` (or any other custom) opset import once nothing refers to it.

    Rules:
    1. a domain counts as used when any node — in the graph, its subgraphs, or a model-local
       function — has that domain, or a function is defined in it;
    2. the default domain ("" / "ai.onnx") is always kept;
    3. graph-level and model-level imports are the same map in onnx_ir, so one removal suffices.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        used = {node.domain for node in ir.traversal.RecursiveGraphIterator(model.graph)}
        for function in model.functions.values():
            used.add(function.domain)
            used.update(node.domain for node in ir.traversal.RecursiveGraphIterator(function))
        unused = [d for d in model.opset_imports if d not in ("", "ai.onnx") and d not in used]
        for domain in unused:
            del model.opset_imports[domain]
        return ir.passes.PassResult(model, modified=bool(unused))
