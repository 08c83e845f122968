"""Pass: lower ``qcompile::DecodeWeight`` to standard ONNX on top of packed low-bit initializers.

The frozen ops export each quantized weight as ``DecodeWeight(packed uint8, zero_point int64)``
(an opaque node, so torch.onnx's constant folding cannot unpack the codes). Here it becomes

    codes (INT2/UINT2/INT4/UINT4/INT8/UINT8 initializer, the packed bytes unchanged)
      → DequantizeLinear(scale = multiplier, zero_point) → [Add(offset)]

which yields the same integer-valued float32 weights as ``QuantCodes.integers()``. 1-bit codes
have no ONNX type: their bytes stay uint8 (8 weights per byte, LSB first), stored as a column,
and a three-node unpack (BitShift is unsigned-only, so it runs on uint8) feeds the same
DequantizeLinear. Its constants are the same in every layer but the target shape, so
``CompactModel`` later keeps one copy of each.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx_ir as ir

from qcompile.export.frozen_ops import DECODE_OP
from qcompile.export.packing import container_bits
from qcompile.export.size import BITS_KEY, ELEMENTS_KEY

DOMAIN, OP_TYPE = DECODE_OP.split("::")

# (container bits, signed) → ONNX element type of the codes, and the numpy dtype of its zero point
_CODE_TYPES = {
    (2, True): (ir.DataType.INT2, ml_dtypes.int2),
    (2, False): (ir.DataType.UINT2, ml_dtypes.uint2),
    (4, True): (ir.DataType.INT4, ml_dtypes.int4),
    (4, False): (ir.DataType.UINT4, ml_dtypes.uint4),
    (8, True): (ir.DataType.INT8, np.int8),
    (8, False): (ir.DataType.UINT8, np.uint8),
}


def _const(value: ir.Value, what: str) -> np.ndarray:
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        raise ir.passes.PassError(f"{DECODE_OP}: the {what} input '{value.name}' is not a constant")
    return tensor.numpy()


class _Builder:
    """Collects new nodes and initializers for one lowering, named after the weight."""

    def __init__(self, graph: ir.Graph, base: str):
        self.graph, self.base, self.nodes = graph, base, []

    def const(self, suffix: str, array: np.ndarray) -> ir.Value:
        name = f"{self.base}.{suffix}"
        tensor = ir.Tensor(array, name=name)
        value = ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype), const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def op(self, op_type: str, inputs: list[ir.Value], suffix: str, **attributes) -> ir.Value:
        node = ir.Node("", op_type, inputs, attributes=ir.convenience.convert_attributes(attributes),
                       name=f"{self.base}.{suffix}")
        node.outputs[0].name = f"{self.base}.{suffix}"
        self.nodes.append(node)
        return node.outputs[0]


class LowerDecodeWeight(ir.passes.InPlacePass):
    """Replace every ``qcompile::DecodeWeight`` node of the main graph by standard ops.

    Rules:
    1. 2-, 4- and 8-bit containers (codes of 2, 3–4 and 5–8 bits): the packed uint8 initializer is
       retyped in place to (U)INT2/(U)INT4/(U)INT8 with the logical weight shape; its bytes are not
       rewritten (they were packed LSB-first, ONNX's order);
    2. 1-bit codes: the uint8 bytes stay, reshaped to a ``[bytes, 1]`` column so that
       BitShift(RIGHT, 0..7) broadcasts to ``[bytes, 8]`` without an Unsqueeze; BitwiseAnd(1) →
       Reshape(shape) unpacks them to uint8 codes, with Reshape(−1) → Slice(0, N) before the last
       Reshape only when N is not a multiple of 8 (padding bits in the last byte);
    3. codes are decoded by ``DequantizeLinear(codes, multiplier, zero_point)``, per-axis along
       axis 0 when the zero points differ between channels, else per-tensor; ``Add(offset)``
       follows when the offset is non-zero. The result replaces the node's output;
    4. the codes initializer records ``qcompile.bits`` (the true code width, e.g. 3 in a 4-bit
       container) in its tensor metadata, for size reports, and 1-bit codes also
       ``qcompile.elements`` (their dims count bytes; other codes' dims are the weight shape);
    5. the int64 zero-point input is left unused (``RemoveUnusedNodesPass`` deletes it).
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        nodes = [n for n in graph if n.domain == DOMAIN and n.op_type == OP_TYPE]
        for node in nodes:
            self._lower(graph, node)
        return ir.passes.PassResult(model, modified=bool(nodes))

    def _lower(self, graph: ir.Graph, node: ir.Node) -> None:
        bits = node.attributes["bits"].as_int()
        signed = bool(node.attributes["signed"].as_int())
        shape = tuple(node.attributes["shape"].as_ints())
        multiplier = node.attributes["multiplier"].as_int()
        offset = node.attributes["offset"].as_int()
        packed_value, zp_value = node.inputs
        packed, zero_point = _const(packed_value, "packed weight"), _const(zp_value, "zero point")
        k = container_bits(bits)
        build = _Builder(graph, packed_value.name)
        meta = {BITS_KEY: str(bits)}
        if k == 1:
            meta[ELEMENTS_KEY] = str(math.prod(shape))
            column = ir.Tensor(packed.reshape(-1, 1), name=packed_value.name, metadata_props=meta)
            packed_value.const_value, packed_value.shape = column, ir.Shape(column.shape)
            codes, zp_dtype = self._unpack_bits(build, packed_value, shape), np.uint8
        else:
            dtype, zp_dtype = _CODE_TYPES[(k, signed)]
            self._retype(packed_value, packed, dtype, shape, meta)
            codes = packed_value
        per_axis = zero_point.ndim == 1 and np.unique(zero_point).size > 1
        zp = zero_point if per_axis else zero_point.reshape(-1)[:1].reshape(())
        scale = np.full(zp.shape, multiplier, dtype=np.float32)
        attrs = {"axis": 0} if per_axis else {}
        out = build.op("DequantizeLinear", [codes, build.const("multiplier", scale),
                                            build.const("zero_point", zp.astype(zp_dtype))], "dequantized", **attrs)
        if offset:
            out = build.op("Add", [out, build.const("offset", np.array(offset, dtype=np.float32))], "decoded")
        old = node.outputs[0]
        out.dtype, out.shape = ir.DataType.FLOAT, ir.Shape(shape)
        graph.insert_before(node, build.nodes)
        ir.convenience.replace_all_uses_with(old, out, replace_graph_outputs=True)
        graph.remove(node, safe=True)

    @staticmethod
    def _retype(value: ir.Value, packed: np.ndarray, dtype: ir.DataType, shape: tuple[int, ...],
                meta: dict[str, str]) -> None:
        """Rule 1: same bytes, new element type and logical shape."""
        if dtype.bitwidth < 8:
            tensor = ir.PackedTensor(packed, dtype, shape=shape, name=value.name, metadata_props=meta)
        else:
            tensor = ir.Tensor(packed.view(dtype.numpy()).reshape(shape), name=value.name, metadata_props=meta)
        value.const_value, value.type, value.shape = tensor, ir.TensorType(dtype), ir.Shape(shape)

    @staticmethod
    def _unpack_bits(build: _Builder, packed: ir.Value, shape: tuple[int, ...]) -> ir.Value:
        """Rule 2: a uint8 ``[bytes, 1]`` column → uint8 codes of ``shape``; bit i of byte b is element 8·b + i."""
        n = math.prod(shape)
        shifted = build.op("BitShift", [packed, build.const("unpack_shifts", np.arange(8, dtype=np.uint8))],
                           "shifted", direction="RIGHT")
        bits = build.op("BitwiseAnd", [shifted, build.const("unpack_mask", np.array(1, np.uint8))], "bits")
        if packed.shape[0] * 8 != n:
            flat = build.op("Reshape", [bits, build.const("unpack_flat", np.array([-1], np.int64))], "flat")
            bits = build.op("Slice", [flat, build.const("unpack_start", np.array([0], np.int64)),
                                         build.const("unpack_end", np.array([n], np.int64))], "sliced")
        return build.op("Reshape", [bits, build.const("unpack_shape", np.array(shape, np.int64))], "codes")
