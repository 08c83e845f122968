"""ONNX pass (``ort-int8``): give every weight DequantizeLinear an explicit zero-point input.

Why: the weight decode omits a zero point of 0 (it is the default), and QLinearConv fuses without one,
but onnxruntime's Gemm/MatMul QDQ selector only fuses into QGemm when the weight DQ names its zero
point. The zero point is zeros of the codes' own type (INT4 stays INT4 on disk; the runtime widens
both to int8 in memory), shaped like the scale.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

_CODE_TYPES = {ir.DataType.INT2, ir.DataType.UINT2, ir.DataType.INT4, ir.DataType.UINT4, ir.DataType.INT8,
               ir.DataType.UINT8}


class AddWeightZeroPoints(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        added = 0
        for node in model.graph:
            if node.op_type != "DequantizeLinear" or node.domain != "" or len(node.inputs) != 2:
                continue
            codes, scale = node.inputs
            if codes is None or codes.const_value is None or codes.dtype not in _CODE_TYPES:
                continue
            shape = tuple(scale.shape) if scale is not None and scale.shape is not None else ()
            zeros = ir.PackedTensor(np.zeros(_packed_size(codes.dtype, shape), np.uint8), codes.dtype, shape=shape) \
                if codes.dtype.bitwidth < 8 else ir.Tensor(np.zeros(shape, codes.dtype.numpy()))
            value = ir.Value(name=f"{codes.name}_zero_point", shape=ir.Shape(shape), type=ir.TensorType(codes.dtype),
                             const_value=zeros)
            model.graph.register_initializer(value)
            node.resize_inputs(3)
            node.replace_input_with(2, value)
            added += 1
        return ir.passes.PassResult(model, modified=bool(added))


def _packed_size(dtype: ir.DataType, shape: tuple) -> int:
    n = int(np.prod(shape, dtype=np.int64))
    return -(-n * dtype.bitwidth // 8)
