"""Pass: lower ``qcompile::BlockLinear`` to onnxruntime's contrib op ``com.microsoft::MatMulNBits``.

MatMulNBits keeps the weights packed in memory and decodes each block inside the matmul, so a 4-bit
Linear stays 4-bit at run time (a DequantizeLinear → MatMul form is folded to a float32 weight at load by
the runtime's exactness settings). The op is not standard ONNX: such a file needs onnxruntime (any
execution provider with a MatMulNBits kernel; the CPU one has 2-, 4- and 8-bit kernels), and the
manifest lists it under ``contrib_ops``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qcompile.export.frozen_block import BLOCK_LINEAR_OP
from qcompile.export.size import BITS_KEY, ELEMENTS_KEY

DOMAIN, OP_TYPE = BLOCK_LINEAR_OP.split("::")
CONTRIB_DOMAIN, CONTRIB_OP = "com.microsoft", "MatMulNBits"
CONTRIB_VERSION = 1
ACCURACY_FP32 = 1  # A stays float32 inside the kernel (4 would quantize it to int8: ~1e-2 error)


def _const(value: ir.Value, what: str, dtype: ir.DataType) -> np.ndarray:
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None or tensor.dtype != dtype:
        raise ir.passes.PassError(f"{BLOCK_LINEAR_OP}: the {what} input '{value.name}' is not a {dtype.name} constant")
    return tensor.numpy()


class LowerBlockLinear(ir.passes.InPlacePass):
    """Rewrite each ``BlockLinear(x, B, scales[, bias])`` as ``MatMulNBits(x, B, scales, , , bias)``.

    Rules:
    1. B must be a uint8 constant [N, ceil(K / block_size), block_size·bits/8] and scales a float32 constant
       [N, ceil(K / block_size)], bias (if any) a float32 constant [N]; anything else is a PassError;
    2. the attributes K, N, bits and block_size are copied; accuracy_level is 1 (float32 compute), so the
       output matches PyTorch to float rounding of the sums;
    3. no zero-point input: the codes are centred on MatMulNBits' default zero point 2^(bits−1);
    4. B is tagged with its code width and weight count (``qcompile.bits``/``qcompile.elements``) for the
       size report; the ``com.microsoft`` opset (version 1) is imported once any node was rewritten.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if node.domain != DOMAIN or node.op_type != OP_TYPE:
                continue
            self._lower(node)
            changed = True
        if changed:
            model.opset_imports[CONTRIB_DOMAIN] = CONTRIB_VERSION
        return ir.passes.PassResult(model, modified=changed)

    @staticmethod
    def _lower(node: ir.Node) -> None:
        attrs = {name: node.attributes[name].as_int() for name in ("K", "N", "bits", "block_size")}
        k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
        blocks = -(-k // block)
        packed = _const(node.inputs[1], "packed weight", ir.DataType.UINT8)
        scales = _const(node.inputs[2], "scales", ir.DataType.FLOAT)
        if packed.shape != (n, blocks, block * bits // 8) or scales.shape != (n, blocks):
            raise ir.passes.PassError(f"{BLOCK_LINEAR_OP} '{node.name}': B {packed.shape} / scales {scales.shape} do "
                                      f"not fit K={k}, N={n}, bits={bits}, block_size={block}")
        bias = node.inputs[3] if len(node.inputs) > 3 else None
        if bias is not None and _const(bias, "bias", ir.DataType.FLOAT).shape != (n,):
            raise ir.passes.PassError(f"{BLOCK_LINEAR_OP} '{node.name}': bias is not [N={n}]")
        node.inputs[1].const_value.metadata_props.update({BITS_KEY: str(bits), ELEMENTS_KEY: str(n * k)})
        inputs = [node.inputs[0], node.inputs[1], node.inputs[2]] + ([None, None, bias] if bias is not None else [])
        attributes = [ir.AttrInt64(name, value) for name, value in attrs.items()]
        attributes.append(ir.AttrInt64("accuracy_level", ACCURACY_FP32))
        new = ir.Node(CONTRIB_DOMAIN, CONTRIB_OP, inputs, attributes, name=node.name)
        old, out = node.outputs[0], new.outputs[0]
        name, old.name = old.name, None
        out.name, out.type, out.shape = name, old.type, old.shape
        node.graph.insert_before(node, new)
        ir.convenience.replace_all_uses_with(old, out, replace_graph_outputs=True)
        node.graph.remove(node, safe=True)
