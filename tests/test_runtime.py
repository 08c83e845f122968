"""Tests for the torch-free runtime, on tiny ONNX models built here with onnx.helper."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile.runtime.session as session_mod
from qcompile.runtime import (
    Artifact,
    ArtifactError,
    InputError,
    ProviderError,
    Session,
    measure_latency,
    resolve_providers,
)
from qcompile.runtime.session import session_options

RNG = np.random.default_rng(0)
W = RNG.standard_normal((16, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
META = {
    "qcompile.version": "0.1.0",
    "qcompile.method": "ste",
    "qcompile.layers": json.dumps([{"name": "fc", "op": "linear", "w_bits": 4, "a_bits": 8, "weight_format": "int4"}]),
    "qcompile.input": json.dumps({"shape": [None, 1, 4, 4], "dtype": "float32", "mean": [0.5], "std": [0.25]}),
    "qcompile.classes": json.dumps(["cat", "dog", "eel"]),
}


def save_classifier(path: Path, shape=(None, 1, 4, 4), metadata: dict[str, str] | None = None) -> Path:
    """Flatten -> MatMul(W) -> Add(B): logits for 3 classes from a 1x4x4 image."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if metadata:
        helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path


def reference(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1) @ W + B


@pytest.fixture
def model(tmp_path) -> Path:
    return save_classifier(tmp_path / "clf.onnx", metadata=META)


@pytest.fixture
def plain(tmp_path) -> Path:
    return save_classifier(tmp_path / "plain.onnx", shape=("N", 1, 4, 4))


def images(n: int) -> np.ndarray:
    return np.random.default_rng(n).random((n, 1, 4, 4), dtype=np.float32)


# -- artifact ----------------------------------------------------------------------------------


def test_artifact_reads_qcompile_metadata(model):
    art = Artifact.load(model)
    assert (art.version, art.method) == ("0.1.0", "ste")
    assert art.layers == ({"name": "fc", "op": "linear", "w_bits": 4, "a_bits": 8, "weight_format": "int4"},)
    assert art.input_shape == (None, 1, 4, 4) and art.input_dtype == "float32" and art.input_name == "x"
    assert art.mean == (0.5,) and art.std == (0.25,)
    assert art.classes == ("cat", "dog", "eel")
    assert art.file_size_bytes == model.stat().st_size > 0 and art.path == model


def test_plain_onnx_without_metadata_still_runs(plain):
    session = Session(plain)
    art = session.artifact
    assert (art.version, art.method, art.layers, art.mean, art.std, art.classes) == (None, None, (), None, None, None)
    assert art.input_shape == (None, 1, 4, 4)  # symbolic batch "N" reads as dynamic
    x = images(5)
    np.testing.assert_allclose(session.run(x), reference(x), rtol=1e-5, atol=1e-5)


def test_missing_folder_and_non_onnx_files_raise_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist") as e:
        Session(tmp_path / "nope.onnx")
    assert "How to fix:" in str(e.value)
    with pytest.raises(ArtifactError, match="is a folder"):
        Artifact.load(tmp_path)
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"PK\x03\x04 this is a torch checkpoint, not onnx")
    with pytest.raises(ArtifactError, match="onnxruntime cannot load") as e:
        Session(junk)
    assert "complete ONNX model" in e.value.hint


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("qcompile.classes", "[not json", "'qcompile.classes' is not valid JSON"),
        ("qcompile.layers", '{"a": 1}', "'qcompile.layers' should be a JSON list"),
        ("qcompile.input", json.dumps({"shape": [None, 3, 4, 4]}), "contradicts the graph's"),
        ("qcompile.input", json.dumps({"shape": [None, 1, 4, 4], "mean": [0.5, 0.5], "std": [1, 1]}), "2 values for 1"),
        ("qcompile.input", json.dumps({"mean": [0.5], "std": [0]}), "has a value <= 0"),
    ],
)
def test_malformed_metadata_is_an_error(tmp_path, key, value, message):
    path = save_classifier(tmp_path / "bad.onnx", metadata={**META, key: value})
    with pytest.raises(ArtifactError, match=message) as e:
        Artifact.load(path)
    assert "re-export" in e.value.hint


# -- running and validation --------------------------------------------------------------------


def test_run_matches_numpy_reference(model):
    x = images(7)
    out = Session(model).run(x)
    assert out.shape == (7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(x), rtol=1e-5, atol=1e-5)


def test_dtype_errors_say_what_to_pass(model):
    session = Session(model)
    with pytest.raises(InputError, match="input dtype is float64, the model expects float32") as e:
        session.run(images(2).astype(np.float64))
    assert e.value.hint == "pass float32: x.astype(np.float32)"
    with pytest.raises(InputError) as e:
        session.run((images(2) * 255).astype(np.uint8))
    assert "divide by 255" in e.value.hint
    with pytest.raises(InputError, match="must be a numpy array, got list") as e:
        session.run(images(2).tolist())
    assert "np.asarray(x, dtype=np.float32) and shape (batch, 1, 4, 4)" in e.value.hint


def test_shape_errors_say_expected_vs_got_and_how_to_fix(model):
    session = Session(model)
    with pytest.raises(InputError, match=r"shape \(1, 4, 4\) \(3-D\), the model expects \(batch, 1, 4, 4\)") as e:
        session.run(images(1)[0])
    assert e.value.hint.startswith("add a batch dimension: x[None]")
    with pytest.raises(InputError, match=r"dim 2 is 5 \(expected 4\), dim 3 is 5 \(expected 4\)") as e:
        session.run(np.zeros((2, 1, 5, 5), np.float32))
    assert "resize/reshape the input to (batch, 1, 4, 4)" in e.value.hint
    with pytest.raises(InputError) as e:
        session.run(np.zeros((2, 4, 4, 1), np.float32))
    assert "x.transpose(0, 3, 1, 2)" in e.value.hint
    with pytest.raises(InputError, match="2-D"):
        session.predict(np.zeros((2, 16), np.float32))


def test_predict_in_batches_equals_one_big_run(model):
    session, x = Session(model), images(150)
    whole = session.run(x)
    for batch_size in (1, 64, 149, 150, 1000):
        np.testing.assert_array_equal(session.predict(x, batch_size=batch_size), whole)
    with pytest.raises(InputError, match="0 samples"):
        session.predict(x[:0])


def test_predict_normalize_uses_artifact_mean_and_std(model, plain):
    session, x = Session(model), images(10)
    np.testing.assert_allclose(session.predict(x, normalize=True), session.run((x - 0.5) / 0.25), rtol=1e-6)
    np.testing.assert_allclose(session.predict(x, normalize=True), reference((x - 0.5) / 0.25), rtol=1e-5, atol=1e-5)
    with pytest.raises(ArtifactError, match="no mean/std metadata") as e:
        Session(plain).predict(x, normalize=True)
    assert "normalize=False" in e.value.hint


def test_fixed_batch_model_is_padded_by_predict(tmp_path):
    session = Session(save_classifier(tmp_path / "b2.onnx", shape=(2, 1, 4, 4)))
    x = images(5)
    np.testing.assert_allclose(session.predict(x, batch_size=64), reference(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match=r"dim 0 is 5 \(expected 2\)") as e:
        session.run(x)
    assert "use predict()" in e.value.hint


def test_concurrent_runs_from_many_threads_match_sequential(model):
    session = Session(model)
    inputs = [images(n) for n in range(1, 21)]
    expected = [session.run(x) for x in inputs]
    results: dict[tuple[int, int], np.ndarray] = {}
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()  # start together so runs really overlap
        for i, x in enumerate(inputs):
            results[t, i] = session.predict(x, batch_size=3) if t % 2 else session.run(x)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 * 20
    for (_, i), out in results.items():
        np.testing.assert_array_equal(out, expected[i])


# -- providers and session options -------------------------------------------------------------


def test_auto_picks_cuda_then_cpu_only_when_available(monkeypatch):
    def only(*names: str) -> None:
        monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: list(names))

    only("CUDAExecutionProvider", "CPUExecutionProvider")
    assert resolve_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    only("AzureExecutionProvider", "CPUExecutionProvider")
    assert resolve_providers("auto") == ["CPUExecutionProvider"]
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match=r"\['CUDAExecutionProvider'\] not available") as e:
        resolve_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "AzureExecutionProvider" in str(e.value) and "onnxruntime-gpu" in e.value.hint


def test_session_uses_resolved_providers_and_threads(model, monkeypatch):
    monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    session = Session(model, providers="auto", intra_op_threads=1)
    assert session.providers == ["CPUExecutionProvider"]
    assert "clf.onnx" in repr(session)
    with pytest.raises(ValueError, match="intra_op_threads"):
        Session(model, intra_op_threads=0)


def test_dequantize_of_constant_weights_is_folded_at_load(tmp_path):
    """Why session.disable_quant_qdq=1 is set: without it ORT keeps DQ of constant weights in the graph.

    Two int4 layers (16 -> 8 -> 3), like a real exported net: with the entry every DequantizeLinear
    is folded into a float initializer and the result is the exact dequantized product.
    """
    q1, q2 = RNG.integers(-8, 8, (16, 8)).astype(np.int8), RNG.integers(-8, 8, (8, 3)).astype(np.int8)
    nodes, inits = [helper.make_node("Flatten", ["x"], ["h0"])], []
    for i, q in enumerate((q1, q2), start=1):
        inits += [
            helper.make_tensor(f"q{i}", TensorProto.INT4, q.shape, q.flatten().tolist()),
            numpy_helper.from_array(np.array(0.05, np.float32), f"s{i}"),
            helper.make_tensor(f"z{i}", TensorProto.INT4, [], [0]),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}", f"z{i}"], [f"w{i}"]),
            helper.make_node("MatMul", [f"h{i - 1}", f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"h{i}"]),
        ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 4, 4])],
        [helper.make_tensor_value_info("h2", TensorProto.FLOAT, [None, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "qdq.onnx")

    def optimised_ops(options) -> list[str]:
        options.optimized_model_filepath = str(tmp_path / "opt.onnx")
        options.log_severity_level = 3
        session_mod.ort.InferenceSession(str(tmp_path / "qdq.onnx"), options, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]

    assert optimised_ops(session_options()) == ["Flatten", "MatMul", "Relu", "MatMul", "Relu"]
    baseline = session_mod.ort.SessionOptions()
    baseline.graph_optimization_level = session_mod.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert optimised_ops(baseline).count("DequantizeLinear") == 2, "ORT now folds DQ by default: drop the entry?"
    x = images(4)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    exact = relu(relu(x.reshape(4, -1) @ (q1 * 0.05)) @ (q2 * 0.05))
    np.testing.assert_allclose(Session(tmp_path / "qdq.onnx").run(x), exact, rtol=1e-5, atol=1e-6)


# -- bench -------------------------------------------------------------------------------------


def test_measure_latency_reports_median_and_p90_per_batch(model, tmp_path):
    stats = measure_latency(model, batch_sizes=(1, 8), warmup=2, repeats=15)
    assert set(stats) == {1, 8}
    for batch, s in stats.items():
        assert set(s) == {"median_ms", "p90_ms", "min_ms", "samples_per_s"}
        assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"] < 1000
        assert s["samples_per_s"] == pytest.approx(batch * 1000 / s["median_ms"])
    fixed = Session(save_classifier(tmp_path / "b2.onnx", shape=(2, 1, 4, 4)))
    with pytest.raises(InputError, match="fixed batch of 2") as e:
        measure_latency(fixed, batch_sizes=(1,))
    assert e.value.hint == "use batch_sizes=(2,)"


# -- torch-free --------------------------------------------------------------------------------

BLOCKED_IMPORT_SCRIPT = r"""
import json, sys
import numpy as np
import qcompile.runtime as rt

session = rt.Session(sys.argv[1])
x = np.random.default_rng(3).random((6, 1, 4, 4), dtype=np.float32)
print(json.dumps({
    "out": session.predict(x, batch_size=4, normalize=True).tolist(),
    "torch": "torch" in sys.modules,
    "onnx": any(m == "onnx" or m.startswith("onnx.") for m in sys.modules),
    "qcompile": sorted(m for m in sys.modules if m.startswith("qcompile")),
}))
"""


def test_runtime_imports_and_runs_with_torch_blocked(model, python_without):
    done = python_without(BLOCKED_IMPORT_SCRIPT, model)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"] is False and report["onnx"] is False
    allowed = ("qcompile", "qcompile.version", "qcompile.errors")
    outside = [m for m in report["qcompile"] if m not in allowed and not m.startswith("qcompile.runtime")]
    assert outside == [], f"runtime imported {outside}"
    x = np.random.default_rng(3).random((6, 1, 4, 4), dtype=np.float32)
    np.testing.assert_allclose(np.array(report["out"]), reference((x - 0.5) / 0.25), rtol=1e-5, atol=1e-5)
