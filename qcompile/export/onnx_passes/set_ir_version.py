"""Pass: raise ``ir_version`` to what the model's opsets and element types require.

torch.onnx's dynamo exporter writes ``ir_version = 10`` whatever the opset, but INT2/UINT2
tensors need IR 13 (ONNX 1.20) and opset 25 needs IR 13 as well; a lower number makes strict
loaders reject the file.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

# element type → (minimum IR version, minimum default-domain opset for DequantizeLinear to accept it)
_TYPE_REQUIREMENTS = {
    ir.DataType.INT4: (10, 21),
    ir.DataType.UINT4: (10, 21),
    ir.DataType.INT2: (13, 25),
    ir.DataType.UINT2: (13, 25),
}


def _element_types(model: ir.Model) -> set[ir.DataType]:
    types = {v.dtype for v in model.graph.initializers.values()}
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        types.update(v.dtype for v in (*node.inputs, *node.outputs) if v is not None)
    return {t for t in types if t is not None}


class SetIRVersion(ir.passes.InPlacePass):
    """Set ``ir_version`` to the largest of: its current value, the minimum for the opset imports,
    and the minimum for the element types used.

    Rules:
    1. never lower ``ir_version``;
    2. opset → IR follows ``onnx.helper.VERSION_TABLE`` (custom domains ignored);
    3. INT4/UINT4 need IR ≥ 10, INT2/UINT2 IR ≥ 13;
    4. a sub-byte type whose default-domain opset is too old to dequantize it (INT4 < 21,
       INT2 < 25) is a ``PassError``: re-export at a higher opset instead of writing a broken file.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        required = onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid(d, v) for d, v in model.opset_imports.items()], ignore_unknown=True)
        for dtype in _element_types(model) & _TYPE_REQUIREMENTS.keys():
            min_ir, min_opset = _TYPE_REQUIREMENTS[dtype]
            if opset < min_opset:
                raise ir.passes.PassError(f"{dtype.name} tensors need opset >= {min_opset}, the model has {opset}")
            required = max(required, min_ir)
        if model.ir_version >= required:
            return ir.passes.PassResult(model, modified=False)
        model.ir_version = required
        return ir.passes.PassResult(model, modified=True)
