"""Pass: compute global average pooling in float64 when activations are quantized.

Why: a float32 mean sums in an order each runtime picks (PyTorch and onnxruntime differ), so the
mean can differ by one ulp; when it then lands on a rounding boundary of the next activation
quantizer, the two runtimes pick different codes (seen: 2 of 2,000 MNIST images at W8A8). Summed in
float64, a few hundred float32 values add up exactly in any order, and the mean rounds back to the
same float32 in both — the quantizer sees identical inputs. Exported as Cast → ReduceMean → Cast.

Rules: (1) ``nn.AdaptiveAvgPool1d/2d`` with output size 1 becomes :class:`Float64GlobalPool`;
(2) ``torch.mean`` / ``Tensor.mean`` calls become :func:`float64_mean`; (3) windowed average pooling
is left alone (onnxruntime has no float64 AveragePool) and reported; (4) nothing else changes.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of, replace_submodule


class Float64GlobalPool(nn.Module):
    """A global average pool evaluated in float64 and rounded back once."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x.double()).to(x.dtype)


@fx.wrap
def float64_mean(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``torch.mean`` evaluated in float64 and rounded back once (see the module docstring)."""
    return torch.mean(x.double(), *args, **kwargs).to(x.dtype)


def _is_global(pool: nn.Module) -> bool:
    size = pool.output_size
    return all(s == 1 for s in (size if isinstance(size, tuple) else (size,)))


class ExactGlobalPooling(GraphPass):
    def run(self, gm: fx.GraphModule):
        rewritten, left = [], []
        for node in gm.graph.nodes:
            m = module_of(gm, node)
            if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)) and _is_global(m):
                replace_submodule(gm, str(node.target), Float64GlobalPool(m))
                rewritten.append(node.name)
            elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
                left.append({"node": node.name, "reason": "windowed average pooling stays float32"})
            elif (node.op == "call_function" and node.target is torch.mean) or (node.op == "call_method" and node.target == "mean"):
                node.op, node.target = "call_function", float64_mean
                rewritten.append(node.name)
        return bool(rewritten), {"float64": rewritten, "left": left}
