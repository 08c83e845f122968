"""Tests for the torch-free runtime, on tiny ONNX models built here with onnx.helper."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompile.runtime.engine as engine_mod
from qcompile.runtime import (
    Artifact,
    ArtifactError,
    InputError,
    ProviderError,
    Session,
    measure_latency,
    resolve_providers,
)
from qcompile.runtime.engine import session_options
from qcompile.runtime.manifest import MANIFEST_KEY

RNG = np.random.default_rng(0)
W = RNG.standard_normal((16, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
MANIFEST = {
    "format": 1,
    "kind": "classifier",
    "producer": "qcompile 0.2.0",
    "method": "ste",
    "input": {"shape": [None, 1, 4, 4], "dtype": "float32", "mean": [0.5], "std": [0.25]},
    "classes": ["cat", "dog", "eel"],
    "layers": [["fc", "Linear", 4, 8, "int4"]],
}
META = {MANIFEST_KEY: json.dumps(MANIFEST)}


def save_classifier(path: Path, shape=(None, 1, 4, 4), metadata: dict[str, str] | None = None, w: np.ndarray = W,
                    fixed_width: bool = True, opset: int = 17) -> Path:
    """Flatten -> MatMul(w) -> Add(B): logits for 3 classes from a 1x4x4 image.

    ``fixed_width=False`` reshapes the logits to their own runtime shape, which leaves the output
    width unknown until the model runs.
    """
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        helper.make_node("MatMul", ["f", "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["logits" if fixed_width else "a"]),
    ]
    if not fixed_width:
        nodes += [helper.make_node("Shape", ["a"], ["s"]), helper.make_node("Reshape", ["a", "s"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "clf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], 3] if fixed_width else None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(B, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
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


def test_artifact_reads_the_manifest(model):
    art = Artifact.load(model)
    assert (art.version, art.method, art.manifest.kind, art.manifest.format) == ("0.2.0", "ste", "classifier", 1)
    assert art.layers == ({"name": "fc", "op": "Linear", "w_bits": 4, "a_bits": 8, "weight_format": "int4"},)
    assert art.input_shape == (None, 1, 4, 4) and art.input_dtype == "float32" and art.input_name == "x"
    assert art.mean == (0.5,) and art.std == (0.25,)
    assert art.classes == ("cat", "dog", "eel") and art.output_width == 3
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
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"\x08\x07 neither onnx nor a bundle")
    with pytest.raises(ArtifactError, match="is not an ONNX model \\(malformed protobuf field") as e:
        Session(junk)
    assert "complete ONNX model" in e.value.hint
    junk.write_bytes(b"\x08\x07")  # a well-formed protobuf (ir_version 7) without a graph
    with pytest.raises(ArtifactError, match="onnxruntime cannot load") as e:
        Session(junk)
    assert "complete ONNX model" in e.value.hint
    checkpoint = tmp_path / "model.pt"  # PyTorch checkpoints are zip archives, like bundles
    with zipfile.ZipFile(checkpoint, "w") as z:
        z.writestr("archive/data.pkl", b"pickle")
    with pytest.raises(ArtifactError, match="zip archive without manifest.json, so not a qcompile bundle") as e:
        Session(checkpoint)
    assert "exported .onnx file or a bundle" in e.value.hint
    checkpoint.write_bytes(checkpoint.read_bytes()[:30])
    with pytest.raises(ArtifactError, match="starts like a zip archive .* cannot be read as one") as e:
        Session(checkpoint)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match="is empty"):
        Artifact.load(empty)


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
        monkeypatch.setattr(engine_mod.ort, "get_available_providers", lambda: list(names))

    only("CUDAExecutionProvider", "CPUExecutionProvider")
    assert resolve_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    only("AzureExecutionProvider", "CPUExecutionProvider")
    assert resolve_providers("auto") == ["CPUExecutionProvider"]
    assert resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError, match=r"\['CUDAExecutionProvider'\] not available") as e:
        resolve_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "AzureExecutionProvider" in str(e.value) and "onnxruntime-gpu" in e.value.hint


def test_session_uses_resolved_providers_and_threads(model, monkeypatch):
    monkeypatch.setattr(engine_mod.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    session = Session(model, providers="auto", intra_op_threads=1)
    assert session.providers == ["CPUExecutionProvider"]
    assert "clf.onnx" in repr(session)
    with pytest.raises(ValueError, match="intra_op_threads"):
        Session(model, intra_op_threads=0)


def test_thread_spinning_is_off_by_default_and_can_be_turned_on(model, monkeypatch):
    key = "session.intra_op.allow_spinning"
    assert session_options().get_session_config_entry(key) == "0"
    assert session_options(spinning=True).get_session_config_entry(key) == "1"
    assert engine_mod.DEFAULT_SPINNING is False
    built = []
    real = engine_mod.session_options
    monkeypatch.setattr(engine_mod, "session_options", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    x = images(3)
    expected = Session(model).run(x)
    assert built[-1].get_session_config_entry(key) == "0"  # the options the ORT session was built with
    for spinning, entry in ((True, "1"), (False, "0")):
        np.testing.assert_array_equal(Session(model, spinning=spinning).run(x), expected)
        assert built[-1].get_session_config_entry(key) == entry
    with pytest.raises(ValueError, match="spinning must be True or False"):
        Session(model, spinning="yes")


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
        engine_mod.ort.InferenceSession(str(tmp_path / "qdq.onnx"), options, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]

    assert optimised_ops(session_options()) == ["Flatten", "MatMul", "Relu", "MatMul", "Relu"]
    baseline = engine_mod.ort.SessionOptions()
    baseline.graph_optimization_level = engine_mod.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
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

session = rt.load(sys.argv[1])  # the factory: opens the classifier kind as a Session
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
