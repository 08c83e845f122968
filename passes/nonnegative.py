"""Analysis: is a node's output provably non-negative?

Used to pick unsigned activation quantizers (one more bit of resolution for free). Sources are
ReLU-like ops; pooling, reshapes, dropout, concatenation and addition/multiplication of
non-negative values keep the property. Anything unknown is assumed signed (the safe answer).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from qcompile.passes.exact_pooling import Float64GlobalPool, float64_mean
from qcompile.passes.graph_utils import module_of

_SOURCE_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softmax, nn.Hardsigmoid)
_KEEPING_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout, nn.Dropout2d,
                    nn.Identity, nn.Unflatten, Float64GlobalPool)
_SOURCE_FUNCS = {F.relu, torch.relu, F.relu6, torch.sigmoid, F.sigmoid, F.softmax, torch.softmax,
                 torch.abs, F.hardsigmoid}
_KEEPING_FUNCS = {F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
                  F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.flatten, F.dropout, torch.cat,
                  torch.reshape, operator.add, operator.mul, torch.add, torch.mul, operator.getitem,
                  torch.mean, torch.sum, float64_mean}
_SOURCE_METHODS = {"relu", "sigmoid", "abs", "softmax"}
_KEEPING_METHODS = {"view", "reshape", "flatten", "mean", "sum", "contiguous", "squeeze", "unsqueeze",
                    "permute", "transpose", "add", "mul"}


def _inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes]


def _clamps_at_nonnegative(node: fx.Node) -> bool:
    """torch.clamp / x.clamp / clip with a constant lower bound ≥ 0."""
    is_clamp = (node.op == "call_function" and node.target in (torch.clamp, torch.clip)) or (
        node.op == "call_method" and node.target in ("clamp", "clip", "clamp_min"))
    if not is_clamp:
        return False
    low = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    return isinstance(low, (int, float)) and low >= 0


def is_nonnegative(gm: fx.GraphModule, node: fx.Node, _memo: dict | None = None) -> bool:
    memo = {} if _memo is None else _memo
    if node in memo:
        return memo[node]
    memo[node] = False  # guards cycles (none in fx graphs) and is the default answer
    m = module_of(gm, node)
    if m is not None:
        result = isinstance(m, _SOURCE_MODULES) or (
            isinstance(m, _KEEPING_MODULES) and all(is_nonnegative(gm, a, memo) for a in _inputs(node)))
    elif _clamps_at_nonnegative(node):
        result = True
    elif node.op == "call_function":
        if node.target in _SOURCE_FUNCS:
            result = True
        else:
            result = node.target in _KEEPING_FUNCS and bool(_inputs(node)) and all(
                is_nonnegative(gm, a, memo) for a in _inputs(node))
    elif node.op == "call_method":
        result = node.target in _SOURCE_METHODS or (
            node.target in _KEEPING_METHODS and all(is_nonnegative(gm, a, memo) for a in _inputs(node)))
    else:
        result = False
    memo[node] = result
    return result
