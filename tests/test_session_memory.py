"""Session memory in bench: RSS growth while the session is built, measured in a child process."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qcompile.runtime import memory
from qcompile.runtime.bench import benchmark
from qcompile.runtime.cli.bench import render

K, N, BLOCK = 4096, 2048, 32  # a 32 MiB float32 weight, 4 MiB as 4-bit codes (+1 MiB of scales): well above
MIB = 2**20                   # the few MiB by which allocator arenas and thread pools make RSS readings vary


def _write(path, node, initializers, opsets=(("", 21),)):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", N])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 10
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("memory"), np.random.default_rng(0)
    fp32 = _write(root / "fp32.onnx", helper.make_node("MatMul", ["x", "w"], ["y"]),
                  [numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "w")])
    packed = rng.integers(0, 256, (N, K // BLOCK, BLOCK // 2), dtype=np.uint8)
    scales = rng.random((N, K // BLOCK), dtype=np.float32)
    nbits = _write(root / "w4.onnx", helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft",
                                                      K=K, N=N, bits=4, block_size=BLOCK, accuracy_level=1),
                   [numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")],
                   (("", 21), ("com.microsoft", 1)))
    return fp32, nbits


def test_rss_growth_follows_the_weights_held_in_memory(models):
    fp32, nbits = (memory.session_memory(path) for path in models)
    assert fp32["note"] is None and fp32["rss_after_bytes"] - fp32["rss_before_bytes"] == fp32["rss_growth_bytes"]
    assert fp32["rss_growth_bytes"] >= 32 * MIB  # the float32 weight is resident
    assert nbits["rss_growth_bytes"] < 12 * MIB  # the packed one: 4 MiB of codes, 1 MiB of scales
    assert fp32["process_setup_bytes"] > 0  # onnxruntime's one-time set-up, paid by the warm-up session
    assert fp32["rss_growth_bytes"] - nbits["rss_growth_bytes"] >= 20 * MIB  # the 4-bit one is 27 MiB smaller


def test_bench_reports_memory_in_the_table_and_the_document(models):
    report = benchmark(models[1], models[0], batch_sizes=(1,), repeats=2, warmup=0, providers="cpu")
    growth = report["model"]["memory"]["rss_growth_bytes"], report["reference"]["memory"]["rss_growth_bytes"]
    assert all(isinstance(g, int) and g > 0 for g in growth)
    assert report["ratios"]["session_rss"] == pytest.approx(growth[0] / growth[1])
    line = next(line for line in render(report).splitlines() if "session memory (RSS growth)" in line)
    assert line.rstrip().endswith(f"{growth[0] / growth[1]:.2f}×")


def test_without_proc_the_growth_is_none_and_the_note_says_why(models, monkeypatch):
    monkeypatch.setattr(memory, "resident_bytes", lambda: None)
    result = memory.session_memory(models[0])
    assert result["rss_growth_bytes"] is None and result["note"] == memory.NO_PROC
    report = benchmark(models[0], models[0], batch_sizes=(1,), repeats=1, warmup=0, providers="cpu")
    assert report["ratios"]["session_rss"] is None and memory.NO_PROC in render(report)
