"""LowerDecodeWeight wherever a quantized weight sits: If branches, Loop bodies, model-local functions.

torch.onnx cannot put ``DecodeWeight`` inside a ``torch.cond`` branch (``torch.onnx.ops.symbolic``
breaks the graph capture that ``cond`` needs), so the models are built directly with onnx.helper.
Each one outputs the decoded weights themselves, so ONNX Runtime's result must equal the numpy decode
bit for bit, and sizes are checked against the codes' true widths.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from qcompile.export.onnx_passes import export_pipeline
from qcompile.export.packing import container_bits, pack_codes
from qcompile.export.size import BITS_KEY, ELEMENTS_KEY, size_report

OPSET = 25  # UINT2 codes
RNG = np.random.default_rng(0)


class Weight:
    """Random codes of one layer, their DecodeWeight node, and the float32 weight it must produce."""

    def __init__(self, name: str, bits: int, signed: bool, shape: tuple[int, ...], multiplier: int = 1,
                 offset: int = 0, per_channel_zp: bool = False, scaled: bool = True):
        k = container_bits(bits)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed and k > 1 else (0, (1 << bits) - 1)
        self.name, self.bits, self.shape = name, bits, shape
        self.codes = RNG.integers(lo, hi + 1, size=shape)
        self.zero_point = RNG.integers(lo, hi + 1, size=shape[0]) if per_channel_zp else np.array(0)
        self.scale = RNG.uniform(0.01, 0.1, size=shape[0]).astype(np.float32) if scaled else None
        self.packed = pack_codes(torch.from_numpy(self.codes), bits).numpy()
        self.attrs = {"bits": bits, "signed": int(signed), "shape": list(shape), "multiplier": multiplier,
                      "offset": offset, "axis": 0}
        zp = self.zero_point.reshape((-1,) + (1,) * (len(shape) - 1)) if per_channel_zp else self.zero_point
        ints = ((self.codes - zp) * multiplier + offset).astype(np.float32)
        self.expected = ints if self.scale is None else ints * self.scale.reshape((-1,) + (1,) * (len(shape) - 1))

    def tensors(self) -> list[TensorProto]:
        out = [numpy_helper.from_array(self.packed, f"{self.name}.packed_weight"),
               numpy_helper.from_array(self.zero_point.astype(np.int64), f"{self.name}.zero_point")]
        if self.scale is not None:
            out.append(numpy_helper.from_array(self.scale, f"{self.name}.scale"))
        return out

    def node(self, output: str) -> onnx.NodeProto:
        inputs = [t.name for t in self.tensors()]
        return helper.make_node("DecodeWeight", inputs, [output], domain="qcompile", **self.attrs)

    def constants(self) -> list[onnx.NodeProto]:
        """The same tensors as Constant nodes (how a function body holds them)."""
        return [helper.make_node("Constant", [], [t.name], value=t) for t in self.tensors()]


W_THEN = Weight("then_layer", 4, True, (3, 4))  # 4 bits, scale folded into one DequantizeLinear
W_ELSE = Weight("else_layer", 1, False, (3, 4), multiplier=2, offset=-1)  # BWN: 1 bit, ±scale
W_LOOP = Weight("loop_layer", 2, False, (3, 5), per_channel_zp=True, scaled=False)  # asym, unscaled
W_FUNC = Weight("func_layer", 3, False, (2, 3, 3, 3), multiplier=2, offset=-7)  # DoReFa-like 3 bits
WEIGHTS = (W_THEN, W_ELSE, W_LOOP, W_FUNC)


def _model() -> onnx.ModelProto:
    """``x`` picks an If branch (4-bit or 1-bit weight); a two-trip Loop decodes a 2-bit weight in its
    body and sums it; a model-local function decodes a 3-bit weight from its own Constant nodes; the
    main graph decodes the then-branch's codes a second time."""
    then_graph = helper.make_graph([W_THEN.node("w_then")], "then", [],
                                   [helper.make_tensor_value_info("w_then", TensorProto.FLOAT, [3, 4])])
    else_graph = helper.make_graph([W_ELSE.node("w_else")], "else", [],
                                   [helper.make_tensor_value_info("w_else", TensorProto.FLOAT, [3, 4])],
                                   initializer=W_ELSE.tensors())  # codes held by the subgraph itself
    body = helper.make_graph(
        [W_LOOP.node("w_body"), helper.make_node("Add", ["acc_in", "w_body"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [3, 5])])
    function = helper.make_function(
        "test", "Layer", [], ["w"], [*W_FUNC.constants(), W_FUNC.node("w")],
        [helper.make_opsetid("", OPSET), helper.make_opsetid("qcompile", 1)])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["positive"]),
        helper.make_node("If", ["positive"], ["w_if"], then_branch=then_graph, else_branch=else_graph),
        helper.make_node("Loop", ["trips", "true", "acc0"], ["w_loop"], body=body),
        helper.make_node("Layer", [], ["w_func"], domain="test"),
        W_THEN.node("w_main"),  # the then-branch's codes, decoded once more in the main graph
    ]
    inits = [*W_THEN.tensors(), *W_LOOP.tensors(),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(2, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "true"),
             numpy_helper.from_array(np.zeros((3, 5), np.float32), "acc0")]
    outputs = [helper.make_tensor_value_info("w_if", TensorProto.FLOAT, [3, 4]),
               helper.make_tensor_value_info("w_loop", TensorProto.FLOAT, [3, 5]),
               helper.make_tensor_value_info("w_func", TensorProto.FLOAT, [2, 3, 3, 3]),
               helper.make_tensor_value_info("w_main", TensorProto.FLOAT, [3, 4])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], outputs, inits)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("qcompile", 1), helper.make_opsetid("test", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10, functions=[function])


def _lowered() -> onnx.ModelProto:
    model = ir.serde.deserialize_model(_model())
    for p in export_pipeline({}):
        p(model)
    return ir.serde.serialize_model(model)


def _all_nodes(model: onnx.ModelProto):
    def walk(nodes):
        for node in nodes:
            yield node
            for attr in node.attribute:
                for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                    yield from walk(graph.node)

    yield from walk(model.graph.node)
    for function in model.functions:
        yield from walk(function.node)


def test_decode_in_if_loop_and_function_is_lowered_exactly():
    model = _lowered()
    onnx.checker.check_model(model, full_check=True)
    assert not [n for n in _all_nodes(model) if n.op_type == "DecodeWeight"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x, branch in ((np.ones(2, np.float32), W_THEN), (-np.ones(2, np.float32), W_ELSE)):
        w_if, w_loop, w_func, w_main = session.run(None, {"x": x})
        assert np.array_equal(w_if, branch.expected)  # the codes decode exactly, in either branch
        assert np.array_equal(w_loop, 2 * W_LOOP.expected)  # two trips through the Loop body
        assert np.array_equal(w_func, W_FUNC.expected)
        assert np.array_equal(w_main, W_THEN.expected)  # codes read twice: retyped once, decoded twice


def test_subgraph_codes_are_typed_and_counted(tmp_path):
    model = _lowered()
    ops = {n.op_type for n in _all_nodes(model)}
    assert "DequantizeLinear" in ops and "BitShift" in ops  # inside subgraphs and the shared functions
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    report = size_report(path)
    rows = {r["name"]: r for r in report["tensors"] if r["bits"] is not None}
    assert {name: (r["dtype"], r["bits"], r["elements"]) for name, r in rows.items()} == {
        "then_layer": ("INT4", 4, 12), "else_layer": ("UINT8", 1, 12), "loop_layer": ("UINT2", 2, 15),
        "func_layer": ("UINT4", 3, 54)}
    assert report["quantized_bound_bytes"] == sum(w.bits * math.prod(w.shape) / 8 for w in WEIGHTS)
    # the 1-bit codes stay in the else branch that held them, retyped there as a [bytes, 1] column
    branches = {a.name: a.g for a in next(n for n in model.graph.node if n.op_type == "If").attribute}
    (codes,) = branches["else_branch"].initializer  # its int64 zero point and float scale are gone
    assert codes.name == "else_layer" and list(codes.dims) == [2, 1] and codes.data_type == TensorProto.UINT8
    assert {p.key: p.value for p in codes.metadata_props} == {BITS_KEY: "1", ELEMENTS_KEY: "12"}
    # the function's codes are its Constant node's tensor, retyped to UINT4 in place
    (layer,) = [f for f in model.functions if f.name == "Layer"]
    (constant,) = [n for n in layer.node if n.op_type == "Constant" and n.attribute[0].t.data_type == TensorProto.UINT4]
    assert list(constant.attribute[0].t.dims) == [2, 3, 3, 3]
