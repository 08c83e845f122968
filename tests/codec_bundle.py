"""A tiny codec bundle for the runtime's tests, built with onnx.helper (no training, no torch).

Encoder: one stride-``ds`` convolution (3 → M channels, kernel ds×ds), M orthonormal projections of
each ds×ds×3 block times ``gain`` (latents span a few quantization steps); decoder: the matching
transposed convolution (exact inverse when M = 3·ds², so the error is the quantization's alone).
Tables: a discretised Laplace per channel (and, in universal mode, per dither level), quantized to
16 bits with every symbol, the overflow one included, at least 1/2^16 — the codec contract's layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qcompile.export.artifact import manifest, write_bundle

PRECISION = 16


def conv_graph(role: str, weight: np.ndarray, ds: int, transpose: bool, opset: int = 18) -> onnx.ModelProto:
    inp, out = ("latent_hat", "image") if transpose else ("image", "latent")
    c_in = weight.shape[0] if transpose else weight.shape[1]
    c_out = weight.shape[1] if transpose else weight.shape[0]
    op = "ConvTranspose" if transpose else "Conv"
    node = helper.make_node(op, [inp, "W"], [out], kernel_shape=[ds, ds], strides=[ds, ds])
    inputs = [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [1, c_in, "h", "w"])]
    graph = helper.make_graph([node], role, inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c_out, "H", "W"])],
                              [numpy_helper.from_array(weight.astype(np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _laplace_cdf(x: np.ndarray, b: float) -> np.ndarray:
    return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0) / b), 1 - 0.5 * np.exp(-np.maximum(x, 0) / b))


def quantized_cdf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer CDF of ``pmf`` (the last entry is the overflow mass), every symbol >= 1 count."""
    total = 1 << precision
    counts = np.maximum(1, np.floor(pmf / pmf.sum() * (total - len(pmf))).astype(np.int64) + 1)
    counts[np.argmax(counts)] += total - counts.sum()
    return np.concatenate([[0], np.cumsum(counts)])


def laplace_tables(scales: list[float], radius: int, levels: int = 0) -> dict[str, np.ndarray]:
    """Contract tables for k ∈ [−radius, radius] (+ overflow): one per channel, or per (channel, dither level)."""
    offsets = [0.0] if not levels else [(2 * j + 1 - levels) / (2 * levels) for j in range(levels)]
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    rows = []
    for b in scales:
        for u in offsets:
            inside = _laplace_cdf(k + u + 0.5, b) - _laplace_cdf(k + u - 0.5, b)
            rows.append(quantized_cdf(np.append(inside, max(1.0 - inside.sum(), 0.0))))
    cdf = np.stack(rows).astype(np.int32)
    t = len(rows)
    return {"cdf": cdf, "cdf_length": np.full(t, cdf.shape[1], np.int32),
            "cdf_offset": np.full(t, -radius, np.int32)}


def build_codec(path: Path, *, m: int = 4, ds: int = 4, gain: float = 4.0, radius: int = 6, quantization="round",
                levels: int = 4, seed: int = 7, weight_seed: int = 0, scales: list[float] | None = None) -> Path:
    """Write a tiny codec bundle to ``path``; ``gain`` scales the encoder (larger: more bits, more escapes)."""
    rng = np.random.default_rng(weight_seed)
    q, _ = np.linalg.qr(rng.standard_normal((3 * ds * ds, m)))  # orthonormal columns: a well-conditioned code
    enc = (q.T * gain).reshape(m, 3, ds, ds)
    dec = (q.T / gain).reshape(m, 3, ds, ds)  # the least-squares inverse of each block's projection
    universal = quantization == "universal"
    tables = laplace_tables(scales or [1.0 + c for c in range(m)], radius, levels if universal else 0)
    fields = {"quantization": quantization, "reconstruction": "identity", "alpha": None, "latent_channels": m,
              "downsample": ds, "precision": PRECISION, "seed": seed if universal else None,
              "node_id": "bottleneck:latent" if universal else None, "dither_levels": levels if universal else None,
              "model": f"tiny-{quantization}", "lambda": gain, "training": {"what": "random weights, test fixture"}}
    graphs = {"encoder": conv_graph("encoder", enc, ds, False), "decoder": conv_graph("decoder", dec, ds, True)}
    write_bundle(path, manifest("codec", extra={"codec": fields}), graphs, tables)
    return path
