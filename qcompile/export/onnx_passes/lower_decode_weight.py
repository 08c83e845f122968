"""Pass: lower ``qcompile::DecodeWeight`` to standard ONNX on top of packed low-bit initializers.

The frozen ops export each quantized weight as ``DecodeWeight(packed uint8, zero_point int64[,
scale])`` (an opaque node, so torch.onnx's constant folding cannot unpack the codes). Here the packed
bytes become the codes initializer (INT2/UINT2/INT4/UINT4/INT8/UINT8, bytes unchanged; 1-bit codes
stay uint8, 8 per byte) and the node becomes the decode program of :mod:`.decode_program`: one
``DequantizeLinear`` where that is exact, else a call to a model-local function that every layer
with the same decode shares. Either yields, bit for bit, the weight ``FrozenQuantizedOp`` computes.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_ir as ir

from qcompile.export.frozen_ops import DECODE_OP, PACKED_WEIGHT
from qcompile.export.onnx_passes.decode_program import DecodeProgram, DecodeSpec, decode_program
from qcompile.export.packing import container_bits
from qcompile.export.size import BITS_KEY, ELEMENTS_KEY

DOMAIN, OP_TYPE = DECODE_OP.split("::")
FUNCTION_PREFIX = "Decode"  # shared decode functions: qcompile::Decode1, Decode2, ...

# (container bits, signed) → ONNX element type of the codes
_CODE_TYPES = {
    (2, True): ir.DataType.INT2, (2, False): ir.DataType.UINT2,
    (4, True): ir.DataType.INT4, (4, False): ir.DataType.UINT4,
    (8, True): ir.DataType.INT8, (8, False): ir.DataType.UINT8,
}


def _const(value: ir.Value, what: str) -> np.ndarray:
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        raise ir.passes.PassError(f"{DECODE_OP}: the {what} input '{value.name}' is not a constant")
    return tensor.numpy()


def _set_constant(value: ir.Value, tensor: ir.TensorProtocol) -> None:
    """Replace the tensor behind an initializer or a Constant node's output."""
    if value.const_value is None:
        value.producer().attributes["value"] = ir.AttrTensor("value", tensor)
    else:
        value.const_value = tensor
    value.type, value.shape = ir.TensorType(tensor.dtype), ir.Shape(tensor.shape)


def _codes_tensor(name: str, packed: np.ndarray, spec: DecodeSpec) -> ir.TensorProtocol:
    """Rules 1 and 2: the same bytes as the codes' initializer, typed, with rule 6's metadata."""
    k = container_bits(spec.bits)
    meta = {BITS_KEY: str(spec.bits)}
    if k == 1:
        if packed.size * 8 != math.prod(spec.shape):
            meta[ELEMENTS_KEY] = str(math.prod(spec.shape))
        return ir.Tensor(packed.reshape(-1, 1), name=name, metadata_props=meta)
    dtype = _CODE_TYPES[(k, spec.signed)]
    if dtype.bitwidth < 8:
        return ir.PackedTensor(packed, dtype, shape=spec.shape, name=name, metadata_props=meta)
    return ir.Tensor(packed.view(dtype.numpy()).reshape(spec.shape), name=name, metadata_props=meta)


def _emit(program: DecodeProgram, codes: ir.Value, params: list[ir.Value], consts: list[ir.Value],
          insert, prefix: str) -> ir.Value:
    """Create the program's nodes, outputs named ``<prefix><step>``, handing each to ``insert`` in
    order; returns the weight."""
    outputs: list[ir.Value] = []
    sources = {"codes": lambda i: codes, "param": params.__getitem__, "const": consts.__getitem__,
               "step": outputs.__getitem__}
    for op_type, inputs, attributes in program.steps:
        node = ir.Node("", op_type, [sources[kind](i) for kind, i in inputs],
                       attributes=ir.convenience.convert_attributes(attributes))
        node.outputs[0].name = f"{prefix}{len(outputs)}"
        insert(node)
        outputs.append(node.outputs[0])
    return outputs[-1]


def _constant_node(array: np.ndarray, name: str) -> ir.Node:
    node = ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", ir.Tensor(array, name=name))])
    node.outputs[0].name = name
    return node


class LowerDecodeWeight(ir.passes.InPlacePass):
    """Replace every ``qcompile::DecodeWeight`` node — of the main graph, of its subgraphs (If, Loop
    and Scan bodies) and of model-local functions — by standard ops.

    Rules:
    1. 2-, 4- and 8-bit containers (codes of 2, 3–4 and 5–8 bits): the packed uint8 constant is
       retyped in place to (U)INT2/(U)INT4/(U)INT8 with the logical weight shape; its bytes are not
       rewritten (they were packed LSB-first, ONNX's order);
    2. 1-bit codes: the uint8 bytes stay, as a ``[bytes, 1]`` column that BitShift(RIGHT, 0..7)
       broadcasts to ``[bytes, 8]``;
    3. the weight is :func:`~.decode_program.decode_program`'s: ``DequantizeLinear`` (scale and
       per-channel zero points along axis 0, an all-zero zero point omitted), with the weight-only
       scale folded in when that is exact, else followed by ``Add(offset)`` and ``Mul(scale)``;
    4. a one-node decode is inlined; a longer one (1-bit unpack, an offset) becomes a call to a
       model-local function ``qcompile::Decode<n>`` taking the codes and the layer's own tensors
       (shape, scale, zero points); layers whose decode has the same steps and constants share one;
    5. new tensors are initializers of the main graph (subgraphs see them by scoping), or Constant
       nodes when the decode sits in a model-local function (functions have no initializers);
    6. the codes record ``qcompile.bits`` (the true code width, e.g. 3 in a 4-bit container) in
       their tensor metadata, for size reports; 1-bit codes, whose dims count bytes, also record
       ``qcompile.elements`` when their last byte holds padding bits (else there are 8 per byte);
    7. the int64 zero point and the float scale inputs, once nothing reads them, are deleted where
       they are initializers (of any graph; ``RemoveUnusedNodesPass`` deletes unused Constant
       nodes); codes read by several decode nodes are retyped once;
    8. the codes take their layer's name: the exporter's ``<layer>.packed_weight`` loses its
       suffix (14 bytes, twice, per layer) unless a value of the model already has that name.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        sites = [(node, None) for node in ir.traversal.RecursiveGraphIterator(model.graph) if self._is_decode(node)]
        for function in list(model.functions.values()):
            sites += [(node, function) for node in ir.traversal.RecursiveGraphIterator(function)
                      if self._is_decode(node)]
        self._model, self._functions, self._packed_bytes, self._decodes = model, {}, {}, {}
        self._names = {v.name for g in (*model.graphs(), *model.functions.values())
                       for v in (*g.inputs, *(o for n in g for o in n.outputs),
                                 *(g.initializers.values() if isinstance(g, ir.Graph) else ()))}
        for node, function in sites:
            self._lower(node, in_function=function is not None)
        return ir.passes.PassResult(model, modified=bool(sites))

    @staticmethod
    def _is_decode(node: ir.Node) -> bool:
        return node.domain == DOMAIN and node.op_type == OP_TYPE

    def _lower(self, node: ir.Node, in_function: bool) -> None:
        packed_value, zp_value, *rest = node.inputs
        scale = _const(rest[0], "scale").astype(np.float32) if rest and rest[0] is not None else None
        first = packed_value not in self._packed_bytes  # rule 7: codes read twice are retyped once
        if first:
            self._packed_bytes[packed_value] = _const(packed_value, "packed weight").reshape(-1)
        packed = self._packed_bytes[packed_value]
        attr = node.attributes
        spec = DecodeSpec(bits=attr["bits"].as_int(), signed=bool(attr["signed"].as_int()),
                          shape=tuple(attr["shape"].as_ints()), multiplier=attr["multiplier"].as_int(),
                          offset=attr["offset"].as_int(), packed_bytes=packed.size,
                          zero_point=_const(zp_value, "zero point"), scale=scale)
        if first:
            self._rename_codes(packed_value)
            _set_constant(packed_value, _codes_tensor(packed_value.name, packed, spec))
        program = decode_program(spec)
        self._decodes[packed_value] = self._decodes.get(packed_value, 0) + 1
        graph, base = node.graph, f"{packed_value.name}.{self._decodes[packed_value]}"

        def constant(array: np.ndarray, suffix: str) -> ir.Value:
            """Rule 5."""
            name = f"{base}.{suffix}"
            if in_function:
                const = _constant_node(array, name)
                graph.insert_before(node, const)
                return const.outputs[0]
            tensor = ir.Tensor(array, name=name)
            value = ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype), const_value=tensor)
            self._model.graph.register_initializer(value)
            return value

        params = [constant(a, f"p{i}") for i, a in enumerate(program.params)]
        insert = lambda new: graph.insert_before(node, new)  # noqa: E731
        if len(program.steps) == 1:
            consts = [constant(a, f"c{i}") for i, a in enumerate(program.consts)]
            out = _emit(program, packed_value, params, consts, insert, f"{base}.d")
        else:
            function = self._shared_function(program)
            call = ir.Node(DOMAIN, function.name, [packed_value, *params], num_outputs=1)
            call.outputs[0].name = f"{base}.decoded"
            insert(call)
            out = call.outputs[0]
        out.dtype, out.shape = ir.DataType.FLOAT, ir.Shape(spec.shape)
        ir.convenience.replace_all_uses_with(node.outputs[0], out, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        for value in (zp_value, *rest):  # rule 7
            owner = value.graph if value is not None else None
            if owner is not None and value.is_initializer() and not value.uses() and not value.is_graph_input():
                owner.initializers.pop(value.name)

    def _rename_codes(self, value: ir.Value) -> None:
        """Rule 8."""
        suffix = f".{PACKED_WEIGHT}"
        layer = value.name[: -len(suffix)] if value.name and value.name.endswith(suffix) else None
        if layer and layer not in self._names:
            self._names.add(layer)
            value.name = layer

    def _shared_function(self, program: DecodeProgram) -> ir.Function:
        """Rule 4: one function per distinct program; its constants are Constant nodes of its body."""
        key = program.key()
        if key in self._functions:
            return self._functions[key]
        model = self._model
        nodes = [_constant_node(a, f"c{i}") for i, a in enumerate(program.consts)]
        codes = ir.Value(name="codes")
        params = [ir.Value(name=f"p{i}") for i in range(len(program.params))]
        weight = _emit(program, codes, params, [n.outputs[0] for n in nodes], nodes.append, "t")
        taken = {f.name for f in model.functions.values() if f.domain == DOMAIN}
        name = next(f"{FUNCTION_PREFIX}{i}" for i in range(1, len(taken) + 2) if f"{FUNCTION_PREFIX}{i}" not in taken)
        body = ir.Graph([codes, *params], [weight], nodes=nodes,
                        opset_imports={"": model.opset_imports.get("", model.opset_imports.get("ai.onnx"))})
        function = ir.Function(DOMAIN, name, graph=body, attributes=[])
        model.functions[function.identifier()] = function
        model.opset_imports.setdefault(DOMAIN, 1)
        self._functions[key] = function
        return function
