"""The example transformer: attention from nn.Linear traces and every projection runs as MatMulNBits;
nn.TransformerEncoderLayer stays an opaque float module, and inspect says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import qcompile
from qcompile.loading import load_model
from qcompile.runtime import Session

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_transformer.py"


def test_the_default_model_is_linear_heavy():
    model = load_model(f"{EXAMPLE}:build")
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert linear == 28 * 192 + 4 * (192 * 576 + 192 * 192 + 2 * 192 * 768) + 192 * 10
    assert linear / sum(p.numel() for p in model.parameters()) > 0.99


def test_every_projection_is_block_quantized_and_runs_as_matmulnbits(tmp_path):
    torch.manual_seed(0)
    model = type(load_model(f"{EXAMPLE}:build"))(dim=32, depth=2, heads=2, num_classes=10)  # small and fast
    cm = qcompile.compile(model, input_shape=(1, 1, 28, 28), w_bits=4, a_bits=None, group_size=16)
    sites = cm.inspect()["sites"]
    assert len(sites) == 1 + 2 * 4 + 1 and all(s["group_size"] == 16 for s in sites)  # embed, 4 per block, head
    path = tmp_path / "tf.onnx"
    cm.export(path)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("MatMulNBits") == 10 and "MatMul" in ops and "Gemm" not in ops  # MatMul: q·kᵀ and attention·v
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = cm.graph_module.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(Session(path, providers="cpu").run(x) - expected).max() <= 1e-4


def test_torch_encoder_layers_stay_float_and_inspect_says_why(tmp_path):
    model = load_model(f"{EXAMPLE}:build_torch_layers")
    cm = qcompile.compile(model, input_shape=(1, 1, 28, 28), w_bits=4, a_bits=None, group_size=32)
    report = cm.inspect()
    assert [s["name"] for s in report["sites"]] == ["embed", "head"]
    blocks = next(op for op in report["float_ops"] if op["name"] == "blocks")
    inner = sum(p.numel() for p in model.blocks.parameters())
    assert blocks["op"] == "TransformerEncoder" and f"its {inner} weights stay float" in blocks["reason"]
    assert "build it from nn.Linear" in blocks["reason"]
    path = tmp_path / "torch-layers.onnx"
    cm.export(path)  # the float encoder exports too, and matches PyTorch
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = cm.graph_module.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(Session(path, providers="cpu").run(x) - expected).max() <= 1e-4
