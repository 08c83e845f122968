"""Analysis: which ops are quantizable sites, what stays in float and why, shapes and MACs.

Shapes come from ``torch.fx.passes.shape_prop.ShapeProp`` at the user's example input shape;
MACs are per sample (batch dimension divided out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from qcompile.quantized_ops import QUANTIZABLE, QuantizedOp
from qcompile.passes.exact_pooling import Float64GlobalPool
from qcompile.passes.graph_utils import module_of

_FLOAT_REASONS: list[tuple[tuple[type, ...], str]] = [
    ((nn.BatchNorm1d, nn.BatchNorm2d), "folded into the preceding conv/linear at export (per-channel scale + bias)"),
    ((nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid),
     "elementwise activation: runs in float on dequantized values; the next quantized op quantizes its output"),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
      nn.AdaptiveMaxPool2d), "pooling has no weights: runs in float"),
    ((Float64GlobalPool,), "global average pool: runs in float64 so every runtime rounds it alike"),
    ((nn.Flatten, nn.Identity, nn.Unflatten), "reshape only"),
    ((nn.Dropout, nn.Dropout2d), "training only: removed at export"),
    ((nn.Softmax, nn.LogSoftmax), "output normalisation: kept in float"),
]


@dataclass
class SiteInfo:
    """One quantizable op as found in the graph."""

    name: str
    op: str  # Conv1d / Conv2d / Linear
    weight_shape: tuple[int, ...]
    params: int
    input_node: str
    output_shape: tuple[int, ...] | None = None
    macs: int | None = None  # per sample


@dataclass
class FloatOp:
    name: str
    op: str
    reason: str


def _float_type(m: nn.Module) -> type:
    return m.float_type if isinstance(m, QuantizedOp) else type(m)


def find_sites(gm: fx.GraphModule) -> list[tuple[fx.Node, SiteInfo]]:
    """Conv1d/Conv2d/Linear call sites (float or already quantized), in graph order."""
    out = []
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if m is None or not (type(m) in QUANTIZABLE or isinstance(m, QuantizedOp)):
            continue
        w = m.weight
        params = w.numel() + (m.bias.numel() if m.bias is not None else 0)
        inp = node.args[0].name if node.args and isinstance(node.args[0], fx.Node) else "?"
        out.append((node, SiteInfo(str(node.target), _float_type(m).__name__, tuple(w.shape), params, inp)))
    return out


def float_ops(gm: fx.GraphModule, leaf_modules: list[str] = ()) -> list[FloatOp]:
    """Every other module call, and function calls that carry weights-free math, with a reason."""
    out = []
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if m is None or type(m) in QUANTIZABLE or isinstance(m, QuantizedOp):
            continue
        name = str(node.target)
        if name in leaf_modules or type(m).__name__ in leaf_modules:
            inner = sum(1 for sub in m.modules() if type(sub) in QUANTIZABLE)
            reason = f"declared leaf: opaque to tracing, kept in float ({inner} conv/linear inside)"
        else:
            reason = next((r for types, r in _FLOAT_REASONS if isinstance(m, types)), None)
            if reason is None:
                has_w = any(True for _ in m.parameters(recurse=False))
                inner = sum(p.numel() for p in m.parameters())
                reason = ("not supported by qcompile yet: kept in float" if has_w
                          else "no weights: runs in float" if not inner
                          else f"a torch.nn module torch.fx keeps opaque (e.g. nn.TransformerEncoderLayer, "
                               f"nn.MultiheadAttention): its {inner} weights stay float; build it from nn.Linear "
                               "to quantize them")
        out.append(FloatOp(name, type(m).__name__, reason))
    return out


def _macs(m: nn.Module, out_shape: tuple[int, ...]) -> int:
    ftype = _float_type(m)
    per_out = m.weight[0].numel()  # (Cin/groups)·k for conv, in_features for linear
    if ftype is nn.Linear:
        return math.prod(out_shape[1:]) * per_out if len(out_shape) > 1 else out_shape[0] * per_out
    return math.prod(out_shape[1:]) * per_out


def propagate_shapes(gm: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> list[SiteInfo]:
    """Run ShapeProp and fill in output shapes and per-sample MACs of every site."""
    was_training = gm.training
    gm.eval()
    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    gm.train(was_training)
    sites = []
    for node, info in find_sites(gm):
        meta = node.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            info.output_shape = tuple(meta.shape)
            info.macs = _macs(gm.get_submodule(node.target), info.output_shape)
        sites.append(info)
    return sites
