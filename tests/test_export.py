"""export_onnx end to end: ORT matches PyTorch, codes are stored exactly and packed, graph is clean."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper

from qcompile.errors import ExportError
from qcompile.runtime import atomic
from qcompile.export import onnx_export
from qcompile.export.artifact import PRODUCER, manifest
from qcompile.export.onnx_export import export_float_onnx, export_onnx
from qcompile.export.onnx_passes import AttachMetadata
from qcompile.export.packing import container_bits
from qcompile.export.size import size_report
from qcompile.plan import QuantSpec
from qcompile.quantized_ops import QuantizedOp
from qcompile.runtime import Artifact, InputSpec
from qcompile.runtime.manifest import MANIFEST_KEY
from test_freeze_for_export import build_quantized, tiny_cnn, tiny_conv1d

BITS = {"0": 4, "3": 2, "6": 3, "8": 8, "11": 1}  # every container width in one model
ROTATED = {"0": 1, "3": 8, "6": 4, "8": 3, "11": 2}
CASES = {
    "sym-pc-a8": QuantSpec(w_bits=4, a_bits=8, overrides=BITS),
    "sym-pc-a4": QuantSpec(w_bits=4, a_bits=4, overrides=BITS),
    "sym-pc-float": QuantSpec(w_bits=4, a_bits=None, overrides=BITS),
    "sym-pt-a4": QuantSpec(w_bits=4, a_bits=4, per_channel=False, overrides=ROTATED),
    "asym-pc-a8": QuantSpec(w_bits=4, a_bits=8, quantizer="uniform-asym", overrides=ROTATED),
    "asym-pt-float": QuantSpec(w_bits=4, a_bits=None, quantizer="uniform-asym", per_channel=False, overrides=BITS),
    "asym-pc-a4": QuantSpec(w_bits=4, a_bits=4, quantizer="uniform-asym", overrides=BITS),
    "dorefa1-a8": QuantSpec(w_bits=1, a_bits=8, quantizer="dorefa"),
    "dorefa2-a4": QuantSpec(w_bits=2, a_bits=4, quantizer="dorefa"),
    "bwn-float": QuantSpec(w_bits=1, a_bits=None, quantizer="bwn"),
    "bwn-pc-a4": QuantSpec(w_bits=1, a_bits=4, quantizer="bwn", per_channel=True),
    "w4-only": QuantSpec(w_bits=4, a_bits=8),
    "conv1d": QuantSpec(w_bits=4, a_bits=8, overrides={"4": 1}),
}
CODE_TYPES = {(2, True): TensorProto.INT2, (2, False): TensorProto.UINT2, (4, True): TensorProto.INT4,
              (4, False): TensorProto.UINT4, (8, True): TensorProto.INT8, (8, False): TensorProto.UINT8,
              (1, False): TensorProto.UINT8}
MANIFEST = manifest("classifier", method="ste", input=InputSpec((None, 3, 6, 6), "float32", (0.5,), (0.25,)),
                    classes=tuple(str(i) for i in range(10)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export each case once per module: name -> (gm, x, path, report)."""
    cache = {}

    def get(name):
        if name not in cache:
            if name == "conv1d":
                gm, x = build_quantized(CASES[name], tiny_conv1d, input_shape=(3, 12))
            else:
                gm, x = build_quantized(CASES[name], tiny_cnn)
            path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
            cache[name] = (gm, x, path, export_onnx(gm, (x,), path, MANIFEST))
        return cache[name]

    return get


def run_ort(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def quantized_ops(gm):
    return {name: m for name, m in gm.named_modules() if isinstance(m, QuantizedOp)}


def initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def decode_codes(t: TensorProto, shape: tuple[int, ...]) -> np.ndarray:
    """Codes as int64, decoded with numpy only (numpy_helper / ml_dtypes, or unpackbits for 1 bit)."""
    meta = {p.key: p.value for p in t.metadata_props}
    if meta["qcompile.bits"] == "1":
        bits = np.unpackbits(np.frombuffer(t.raw_data, np.uint8), bitorder="little")
        return bits[: math.prod(shape)].reshape(shape).astype(np.int64)
    return numpy_helper.to_array(t).astype(np.int64)


@pytest.mark.parametrize("name", list(CASES))
def test_onnxruntime_matches_pytorch(exported, name):
    gm, x, path, _ = exported(name)
    with torch.no_grad():
        expected = gm(x).numpy()
    for batch in (x, x[:1]):  # the batch dimension is dynamic
        got = run_ort(path, batch.numpy())
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-4


@pytest.mark.parametrize("name", list(CASES))
def test_stored_codes_are_exact_packed_and_typed(exported, name):
    gm, _, path, _ = exported(name)
    model = onnx.load(str(path))
    inits = initializers(model)
    for layer, op in quantized_ops(gm).items():
        expected = op.weight_quantizer.codes(op.weight)
        t = inits[layer]
        k, n = container_bits(expected.bits), op.weight.numel()
        assert t.data_type == CODE_TYPES[(k, expected.signed)]
        assert len(t.raw_data) == math.ceil(n * k / 8)
        assert np.array_equal(decode_codes(t, tuple(op.weight.shape)), expected.codes.numpy())


def test_int4_and_one_bit_byte_sizes(exported):
    model = onnx.load(str(exported("sym-pc-a8")[2]))
    inits = initializers(model)
    first = inits["0"]
    assert first.data_type == TensorProto.INT4 and list(first.dims) == [8, 3, 3, 3] and len(first.raw_data) == 108
    last = inits["11"]  # Linear 16 -> 10 at 1 bit: 160 weights -> 20 bytes
    assert last.data_type == TensorProto.UINT8 and len(last.raw_data) == 20


@pytest.mark.parametrize("name", list(CASES))
def test_graph_is_standard_and_holds_no_float_weights(exported, name):
    gm, _, path, report = exported(name)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    functions = {(f.domain, f.name) for f in model.functions}  # shared decodes (1-bit unpack, offsets)
    assert all(n.domain in ("", "ai.onnx") or (n.domain, n.op_type) in functions for n in model.graph.node)
    assert all(n.domain in ("", "ai.onnx") for f in model.functions for n in f.node)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert set(opsets) <= {"", "qcompile"} and ("qcompile" in opsets) == bool(functions)
    two_bit = any(layer["weight_format"].endswith("int2") for layer in report.layers)
    assert opsets[""] == (25 if two_bit else 21) == report.opset
    assert model.ir_version >= (13 if two_bit else 10)
    weight_sizes = {op.weight.numel() for op in quantized_ops(gm).values()}
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.type == a.TENSOR]
    floats = [t for t in tensors if t.data_type == TensorProto.FLOAT and math.prod(t.dims) in weight_sizes]
    assert not floats, f"float copies of quantized weights: {[t.name for t in floats]}"
    assert not any(n.op_type in ("QuantizeLinear", "Constant") for n in model.graph.node)


@pytest.mark.parametrize("name", ["sym-pc-a8", "sym-pc-a4", "asym-pc-a4", "dorefa2-a4"])
def test_activation_clip_bounds_are_exact(exported, name):
    gm, _, path, _ = exported(name)
    model = onnx.load(str(path))
    inits = initializers(model)
    bound = lambda name: float(numpy_helper.to_array(inits[name]))  # noqa: E731
    clips = sorted((bound(n.input[1]), bound(n.input[2])) for n in model.graph.node if n.op_type == "Clip")
    expected = sorted((op.input_quantizer.qmin, op.input_quantizer.qmax) for op in quantized_ops(gm).values())
    assert clips == expected
    if name.endswith("a4"):
        assert (0.0, 15.0) in clips and (-8.0, 7.0) in clips  # uint4 after ReLU, int4 on the raw input


def test_manifest_round_trips_with_the_exports_own_layer_records(exported):
    _, _, path, report = exported("sym-pc-a8")
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert set(meta) == {MANIFEST_KEY}  # one key: the manifest, nothing written twice
    d = json.loads(meta[MANIFEST_KEY])
    assert (d["format"], d["kind"], d["producer"], d["method"]) == (1, "classifier", PRODUCER, "ste")
    assert d["input"] == {"shape": [None, 3, 6, 6], "dtype": "float32", "mean": [0.5], "std": [0.25]}
    assert d["classes"] == [str(i) for i in range(10)]
    assert meta[MANIFEST_KEY] == json.dumps(d, separators=(",", ":"))  # compact: its bytes count in the file
    assert d["layers"] == [[r["name"], r["op"], r["w_bits"], r["a_bits"], r["weight_format"]] for r in report.layers]
    art = Artifact.load(path)
    assert list(art.layers) == report.layers and art.method == "ste" and art.mean == (0.5,)
    summary = {(layer["name"], layer["w_bits"], layer["a_bits"], layer["weight_format"]) for layer in art.layers}
    assert summary >= {("0", 4, 8, "int4"), ("3", 2, 8, "int2"), ("6", 3, 8, "int4"), ("8", 8, 8, "int8"),
                       ("11", 1, 8, "uint8-bitpacked")}


def test_an_invalid_manifest_is_an_export_error_and_nothing_is_written(tmp_path):
    gm, x = build_quantized(QuantSpec(w_bits=4, a_bits=8))
    bad = manifest("classifier", input=InputSpec((None, 3, 6, 6), "float32", (float("nan"),), (0.25,)))
    with pytest.raises(ExportError, match="manifest is invalid.*not finite"):
        export_onnx(gm, (x,), tmp_path / "m.onnx", bad)
    assert list(tmp_path.iterdir()) == []


def test_size_report(exported):
    gm, _, path, _ = exported("sym-pc-a8")
    report = size_report(path)
    assert report["file_bytes"] == os.path.getsize(path)
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["0"] == {"name": "0", "dtype": "INT4", "elements": 216,
                                       "stored_bytes": 108, "bits": 4}
    assert rows["6"]["bits"] == 3 and rows["6"]["dtype"] == "INT4"
    assert rows["11"]["elements"] == 160 and rows["11"]["stored_bytes"] == 20
    bound = sum(BITS[name] * op.weight.numel() / 8 for name, op in quantized_ops(gm).items())
    assert report["quantized_bound_bytes"] == bound
    assert report["bound_bytes"] == bound + report["other_bytes"]
    int4 = [r for r in report["tensors"] if r["dtype"] == "INT4"]  # codes of '0' and '6', and their zero points
    assert report["by_dtype"]["INT4"] == {"count": len(int4), "elements": sum(r["elements"] for r in int4),
                                          "stored_bytes": sum(r["stored_bytes"] for r in int4)}
    assert report["ratio"] == report["file_bytes"] / report["bound_bytes"] > 1


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    gm, x = build_quantized(QuantSpec(w_bits=4, a_bits=8))
    target = tmp_path / "model.onnx"

    def broken_check(proto):
        raise ExportError("checker says no")

    monkeypatch.setattr(onnx_export, "check_onnx", broken_check)
    with pytest.raises(ExportError, match="checker says no"):
        export_onnx(gm, (x,), target)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    target.write_bytes(b"previous model")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(gm, (x,), target)
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"previous model"


def test_export_leaves_the_graph_module_alone(tmp_path):
    gm, x = build_quantized(QuantSpec(w_bits=2, a_bits=8))
    export_onnx(gm, (x,), tmp_path / "m.onnx")
    assert len(quantized_ops(gm)) == 5


def test_rejects_too_low_opset_and_non_string_metadata(tmp_path):
    gm, x = build_quantized(QuantSpec(w_bits=2, a_bits=None))
    with pytest.raises(ExportError, match="opset >= 25"):
        export_onnx(gm, (x,), tmp_path / "m.onnx", opset=21)
    with pytest.raises(TypeError, match="must be str"):
        AttachMetadata({"qcompile.classes": ["a", "b"]})
    assert list(tmp_path.iterdir()) == []


def test_float_reference_export(tmp_path):
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = torch.randn(4, 3, 6, 6)
    path = export_float_onnx(model, (x,), tmp_path / "fp32.onnx")
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(run_ort(path, x.numpy()) - expected).max() <= 1e-4
    assert {t.data_type for t in onnx.load(str(path)).graph.initializer} <= {TensorProto.FLOAT, TensorProto.INT64}
