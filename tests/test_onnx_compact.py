"""CompactModel and DropDefaultAttributes: smaller files, same outputs, codes still traceable per layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import qcompile
from qcompile.export import onnx_export
from qcompile.export.onnx_export import export_onnx
from qcompile.export.onnx_passes import CompactModel, DropDefaultAttributes, FoldBiasAdd
from qcompile.export.size import BITS_KEY, ELEMENTS_KEY, size_report
from qcompile.plan import QuantSpec
from test_freeze_for_export import build_quantized

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "w1": QuantSpec(w_bits=1, a_bits=None, quantizer="bwn"),
    "w1a8": QuantSpec(w_bits=1, a_bits=8, quantizer="bwn"),
    "w2": QuantSpec(w_bits=2, a_bits=None),
    "w2a8": QuantSpec(w_bits=2, a_bits=8),
    "w4": QuantSpec(w_bits=4, a_bits=None),
    "w4a8": QuantSpec(w_bits=4, a_bits=8),
}


def run_ort(model_or_path, x: np.ndarray) -> np.ndarray:
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def codes_names(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer if any(p.key == BITS_KEY for p in t.metadata_props)}


def overhead(path: Path) -> int:
    """File bytes beyond the tensors' payload."""
    model = onnx.load(str(path))
    return path.stat().st_size - sum(len(t.raw_data) for t in model.graph.initializer)


# ----------------------------------------------------------------------------- the passes alone
def _codes(name: str, data: np.ndarray) -> TensorProto:
    t = numpy_helper.from_array(data, name)
    t.metadata_props.add(key=BITS_KEY, value="8")
    return t


def _toy_model() -> onnx.ModelProto:
    """y = x·Cast(codes_a) + x·Cast(codes_b) + one + same_one + a, with equal codes, equal constants,
    a value named like a short name, intermediate value_info, node names and doc strings."""
    codes = np.array([[1], [2], [3], [4]], np.uint8)
    nodes = [
        helper.make_node("Cast", ["codes_a"], ["wa"], to=TensorProto.FLOAT, name="cast_a", doc_string="from torch"),
        helper.make_node("Cast", ["codes_b"], ["wb"], to=TensorProto.FLOAT, name="cast_b"),
        helper.make_node("MatMul", ["x", "wa"], ["ta"], name="mm_a"),
        helper.make_node("MatMul", ["x", "wb"], ["tb"], name="mm_b"),
        helper.make_node("Add", ["ta", "tb"], ["s"], name="add_0"),
        helper.make_node("Add", ["s", "one"], ["s1"], name="add_1"),
        helper.make_node("Add", ["s1", "same_one"], ["s2"], name="add_2"),
        helper.make_node("Add", ["s2", "a"], ["y"], name="add_3"),
    ]
    inits = [_codes("codes_a", codes), _codes("codes_b", codes.copy()),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(1.0, np.float32), "same_one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "a")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1]) for n in ("ta", "tb", "s", "s1", "s2")]
    graph = helper.make_graph(nodes, "toy", [x], [y], inits, value_info=info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _compact(proto: onnx.ModelProto, *passes) -> onnx.ModelProto:
    model = ir.serde.deserialize_model(onnx.ModelProto.FromString(proto.SerializeToString()))  # ir wraps the protos
    for p in passes:
        p(model)
    return ir.serde.serialize_model(model)


def test_compact_model_rules_on_a_toy_graph():
    before = _toy_model()
    after = _compact(before, CompactModel())
    onnx.checker.check_model(after, full_check=True)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert np.array_equal(run_ort(after, x), run_ort(before, x))
    g = after.graph
    assert not g.value_info  # rule 2
    assert [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == ["N", 4]
    assert (g.input[0].name, g.output[0].name) == ("x", "y")  # rule 4: graph inputs and outputs keep names
    assert all(not n.name and not n.doc_string for n in g.node)  # rule 3
    inits = {t.name: t for t in g.initializer}
    assert codes_names(after) == {"codes_a", "codes_b"}  # rule 1: equal codes of two layers stay apart
    assert len(inits) == 4  # …but the equal scalars 'one' and 'same_one' are one tensor now
    others = set(inits) - {"codes_a", "codes_b"}
    outputs = [o for n in g.node for o in n.output if o != "y"]
    assert all(len(name) <= 2 and name.isidentifier() for name in others | set(outputs))  # rule 4
    assert len({*inits, *outputs, "x", "y"}) == len(inits) + len(outputs) + 2  # unique
    assert {p.key: p.value for p in inits["codes_a"].metadata_props} == {BITS_KEY: "8"}


def test_compact_model_keeps_subgraph_scoping_unique():
    """An If whose branches read an outer value: one counter for the model keeps names unique."""
    then = helper.make_graph([helper.make_node("Add", ["x", "k"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Sub", ["x", "k"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["r"], keepdims=0),
         helper.make_node("Greater", ["r", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
         numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "k")])
    before = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    after = _compact(before, CompactModel())
    onnx.checker.check_model(after, full_check=True)
    for x in (np.array([1.0, 2.0], np.float32), np.array([-1.0, -2.0], np.float32)):
        assert np.array_equal(run_ort(after, x), run_ort(before, x))


def test_drop_default_attributes():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], group=1, auto_pad="NOTSET", strides=[1, 1], dilations=[1, 1],
                         pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Identity", ["v"], ["v_unknown_shape"]),  # no value_info: its shape is not known
        helper.make_node("Conv", ["c", "v_unknown_shape"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("MaxPool", ["c2"], ["p"], storage_order=0, ceil_mode=0, dilations=[1, 1], pads=[0, 0, 0, 0],
                         strides=[2, 2], kernel_shape=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "m"], ["y"], alpha=1.0, beta=1.0, transA=0, transB=1),
    ]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "v"),
             numpy_helper.from_array(rng.standard_normal((3, 2 * 2 * 2)).astype(np.float32), "m")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    before = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    after = _compact(before, DropDefaultAttributes())
    onnx.checker.check_model(after, full_check=True)
    left = [(n.op_type, sorted(a.name for a in n.attribute)) for n in after.graph.node]
    # kernel_shape goes where the weight's shape says it, stays where that shape is unknown (and on pooling)
    assert left == [("Conv", ["pads"]), ("Identity", []), ("Conv", ["kernel_shape"]),
                    ("MaxPool", ["kernel_shape", "strides"]), ("Flatten", []), ("Gemm", ["transB"])]
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert np.array_equal(run_ort(after, x), run_ort(before, x))


def test_fold_bias_add():
    """Conv → Add([1, C, 1, 1]) and Gemm → Add([N]) fold; a shared Conv output or a non-channel Add stays."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "b"], ["cb"]),  # folds
        helper.make_node("Conv", ["cb", "w2"], ["c2"]),
        helper.make_node("Add", ["c2", "b2"], ["c2b"]),  # c2 is also read by the Mul: stays
        helper.make_node("Mul", ["c2", "c2b"], ["m"]),
        helper.make_node("Conv", ["m", "w2"], ["c3"]),
        helper.make_node("Add", ["c3", "full"], ["c3b"]),  # not a per-channel bias: stays
        helper.make_node("Flatten", ["c3b"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["gm"], transB=1),
        helper.make_node("Add", ["gb", "gm"], ["y"]),  # folds, bias first; y stays the graph output
    ]
    rng = np.random.default_rng(0)
    arrays = {"w": (2, 1, 3, 3), "b": (1, 2, 1, 1), "w2": (2, 2, 1, 1), "b2": (2, 1, 1), "full": (1, 2, 4, 4),
              "g": (3, 32), "gb": (3,)}
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in arrays.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    before = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    model = ir.serde.deserialize_model(onnx.ModelProto.FromString(before.SerializeToString()))
    assert FoldBiasAdd()(model).modified
    after = ir.serde.serialize_model(model)
    onnx.checker.check_model(after, full_check=True)
    assert [n.op_type for n in after.graph.node] == ["Conv", "Conv", "Add", "Mul", "Conv", "Add", "Flatten", "Gemm"]
    inits = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    first, gemm = after.graph.node[0], after.graph.node[-1]
    assert np.array_equal(inits[first.input[2]], numpy_helper.to_array(graph.initializer[1]).reshape(2))
    assert np.array_equal(inits[gemm.input[2]], numpy_helper.to_array(graph.initializer[6]))
    assert gemm.output[0] == "y" and after.graph.output[0].name == "y"
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert np.abs(run_ort(after, x) - run_ort(before, x)).max() <= 1e-5


# ----------------------------------------------------------------------------- through export_onnx
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (gm, x, compact path, path exported without DropDefaultAttributes and CompactModel)."""
    cache = {}
    full = onnx_export.export_pipeline

    def loose(metadata, *args):
        return [p for p in full(metadata, *args) if not isinstance(p, (DropDefaultAttributes, CompactModel))]

    def get(name, model_fn=None):
        if name not in cache:
            kwargs = {"model_fn": model_fn, "input_shape": (3, 6, 6)} if model_fn else {}
            gm, x = build_quantized(CASES[name.split("-")[0]], **kwargs)
            folder = tmp_path_factory.mktemp("compact")
            export_onnx(gm, (x,), folder / "compact.onnx", {})
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(onnx_export, "export_pipeline", loose)
                export_onnx(gm, (x,), folder / "loose.onnx", {})
            cache[name] = (gm, x, folder / "compact.onnx", folder / "loose.onnx")
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_compact_export_matches_pytorch_and_is_smaller(exported, name):
    gm, x, path, loose = exported(name)
    with torch.no_grad():
        expected = gm(x).numpy()
    for batch in (x, x[:1]):  # the batch dimension is still dynamic
        got = run_ort(path, batch.numpy())
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-4
        assert np.array_equal(got, run_ort(loose, batch.numpy()))  # compacting changes no output bit
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not model.graph.value_info
    assert all(not n.name and not n.doc_string for n in model.graph.node)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch stays symbolic
    kept = codes_names(model) | {v.name for v in (*model.graph.input, *model.graph.output)}
    assert codes_names(model) == {layer for layer in ("0", "3", "6", "8", "11")}
    names = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    assert all(len(n) <= 2 for n in names - kept), sorted(names - kept)
    assert size_report(path)["quantized_bound_bytes"] == size_report(loose)["quantized_bound_bytes"]
    assert overhead(path) < 0.4 * overhead(loose)  # 0.26-0.36 on this model


def _constant(function: onnx.FunctionProto, name: str) -> np.ndarray:
    node = next(n for n in function.node if n.op_type == "Constant" and n.output[0] == name)
    return numpy_helper.to_array(node.attribute[0].t)


def test_one_bit_decode_is_one_shared_function(exported):
    _, _, path, loose = exported("w1")
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert "BitShift" not in ops and "DequantizeLinear" not in ops  # the decode is written once, in the function
    (function,) = model.functions
    calls = [n for n in model.graph.node if (n.domain, n.op_type) == (function.domain, function.name)]
    assert len(calls) == 5 and {c.input[0] for c in calls} == codes_names(model)
    body = [n for n in function.node if n.op_type != "Constant"]
    assert [n.op_type for n in body] == ["BitShift", "BitwiseAnd", "Reshape", "DequantizeLinear", "Add", "Mul"]
    assert np.array_equal(_constant(function, body[0].input[1]), np.arange(8, dtype=np.uint8))
    assert _constant(function, body[3].input[1]) == 2 and _constant(function, body[4].input[1]) == -1  # 2c - 1
    small_int64 = [t for t in model.graph.initializer if t.data_type == TensorProto.INT64]
    assert len(small_int64) <= 5 + 1  # a target shape per layer (+ the exporter's Flatten shape)
    inits = {t.name: t for t in model.graph.initializer}
    for name in codes_names(model):
        meta = {p.key: p.value for p in inits[name].metadata_props}
        assert meta == {BITS_KEY: "1"} and inits[name].dims[1] == 1  # no padding: 8 weights a byte
    assert overhead(path) < 0.4 * overhead(loose)


def _odd_cnn() -> nn.Module:
    """135 conv weights: not a multiple of 8, so the last byte holds padding bits."""
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 4, 3))


def test_one_bit_padding_bits_are_sliced_off(exported):
    gm, x, path, _ = exported("w1-odd", _odd_cnn)
    with torch.no_grad():
        expected = gm(x).numpy()
    assert np.abs(run_ort(path, x.numpy()) - expected).max() <= 1e-4
    model = onnx.load(str(path))
    sliced = [f.name for f in model.functions if any(n.op_type == "Slice" for n in f.node)]
    assert len(model.functions) == 2 and len(sliced) == 1  # only the conv's 135 bits need the Slice
    (call,) = [n for n in model.graph.node if n.op_type == sliced[0]]
    assert call.input[0] == "0" and [n.op_type for n in model.graph.node].count("Slice") == 0
    codes = {t.name: {p.key: p.value for p in t.metadata_props} for t in model.graph.initializer if t.metadata_props}
    assert codes == {"0": {BITS_KEY: "1", ELEMENTS_KEY: "135"}, "3": {BITS_KEY: "1"}}  # 240 weights: 30 full bytes
    rows = {r["name"]: r for r in size_report(path)["tensors"]}
    assert (rows["0"]["elements"], rows["0"]["stored_bytes"], rows["3"]["elements"]) == (135, 17, 240)


@pytest.mark.parametrize("example,input_shape,w_bits,quantizer,at_most", [
    ("mnist_cnn", (1, 1, 28, 28), 4, "uniform", 1.035),
    ("mnist_cnn", (1, 1, 28, 28), 1, "bwn", 1.15),
    ("resnet20", (1, 3, 32, 32), 1, "bwn", 1.20),
])
def test_example_file_is_close_to_its_bound(tmp_path, example, input_shape, w_bits, quantizer, at_most):
    """Random weights: the stored bytes do not depend on the values (raw containers, no entropy coding).
    ResNet-20's 22 binary layers share one decode function, and ONNX Runtime still matches PyTorch."""
    torch.manual_seed(0)
    cm = qcompile.compile(f"{ROOT / 'examples' / example}.py:build", input_shape=input_shape,
                          w_bits=w_bits, a_bits=None, quantizer=quantizer)
    cm.export(tmp_path / "m.onnx")
    ratio = size_report(tmp_path / "m.onnx")["ratio"]
    assert ratio <= at_most
    if example == "resnet20":
        model = onnx.load(str(tmp_path / "m.onnx"))
        assert len(model.functions) == 1 and len(codes_names(model)) == 22
        x = torch.randn(4, *input_shape[1:])
        with torch.no_grad():
            expected = cm.graph_module.eval()(x).numpy()
        assert np.abs(run_ort(tmp_path / "m.onnx", x.numpy()) - expected).max() <= 1e-4
