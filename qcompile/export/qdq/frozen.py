"""Frozen modules of the ``ort-int8`` target: buffers only; eager = the integer arithmetic, export = QDQ.

Eager forward computes exactly what :mod:`qcompile.integer` computes in the trained model's eval (so the
frozen graph and the trained one agree bit for bit); under ``torch.onnx.export`` each module emits the
node pattern onnxruntime fuses into its integer kernel (:mod:`.nodes`). An input marked ``on_grid`` comes
straight from a producer's DequantizeLinear on the same grid, so no second Q/DQ pair is written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qcompile.export.frozen_ops import FrozenConv, FrozenLinear
from qcompile.export.qdq.nodes import dequantize_bias, quantize_dequantize, zero_point
from qcompile.integer import arith
from qcompile.integer.kernel import kernel_output
from qcompile.quantizers.activation import ActivationQuantizer


class Grid(nn.Module):
    """One 8-bit activation grid, frozen: scale, exact code range and the uint8 zero point that stores it."""

    def __init__(self, q: ActivationQuantizer):
        super().__init__()
        self.register_buffer("scale", q.scale().detach().clone())
        self.register_buffer("zero_point", zero_point(q.signed))
        self.qmin, self.qmax = q.qmin, q.qmax

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(x / self.scale), self.qmin, self.qmax)

    def grid(self) -> tuple:
        """``(scale, u8 zero point, qmin, qmax)``, as :func:`qcompile.integer.arith.add_codes` takes it."""
        return self.scale, int(self.zero_point), self.qmin, self.qmax

    def qdq(self, x: torch.Tensor, on_grid: bool = False) -> torch.Tensor:
        """In export, the Q → DQ pair (none when ``x`` is already this grid's DequantizeLinear output)."""
        return x if on_grid else quantize_dequantize(x, self.scale, self.zero_point)


class IntegerKernelOp:
    """Mixin over FrozenConv/FrozenLinear: ``output_scale`` holds the weight's effective scale (BatchNorm
    folded in: the weight DequantizeLinear's scale), ``bias_codes`` the int32 bias, ``grid`` the output grid."""

    def init_kernel(self, bias_codes: torch.Tensor | None, input_grid: Grid, output_grid: Grid | None) -> None:
        self.register_buffer("bias_codes", None if bias_codes is None else bias_codes.to(torch.int32).clone())
        self.register_buffer("bias_scale", (self.input_scale * self.output_scale).to(torch.float32))
        self.input_grid, self.output_grid = input_grid, output_grid
        self.input_on_grid = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            x = self.input_grid.qdq(x, self.input_on_grid)
            b = None if self.bias_codes is None else dequantize_bias(self.bias_codes, self.bias_scale)
            y = self._op_with_bias(x, self.decode_weight(self.output_scale), b)
            return y if self.output_grid is None else self.output_grid.qdq(y)
        g = self.output_grid
        return kernel_output(self._op, self._out_view, self.input_grid.codes(x), self.input_scale,
                             self.codes().integers(), self.output_scale, self.bias_codes,
                             None if g is None else g.scale, (0, 0) if g is None else (g.qmin, g.qmax))


class FrozenIntegerConv(IntegerKernelOp, FrozenConv):
    def _op_with_bias(self, x, w, b):
        fn = F.conv1d if self.float_type is nn.Conv1d else F.conv2d
        return fn(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class FrozenIntegerLinear(IntegerKernelOp, FrozenLinear):
    def _op_with_bias(self, x, w, b):
        return F.linear(x, w, b)


class FrozenQuantAdd(nn.Module):
    """QLinearAdd: DQ(a) + DQ(b) → Q (a folded ReLU is the unsigned output range)."""

    def __init__(self, a: Grid, b: Grid, out: Grid, relu: bool):
        super().__init__()
        self.a, self.b, self.out, self.relu = a, b, out, relu
        self.a_on_grid = self.b_on_grid = False

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self.out.qdq(self.a.qdq(a, self.a_on_grid) + self.b.qdq(b, self.b_on_grid))
        codes = arith.add_codes(self.a.codes(a), self.a.grid(), self.b.codes(b), self.b.grid(), self.out.grid())
        return codes * self.out.scale


class FrozenQuantGlobalPool(nn.Module):
    """QLinearGlobalAveragePool: DQ → GlobalAveragePool → Q."""

    def __init__(self, inp: Grid, out: Grid):
        super().__init__()
        self.inp, self.out = inp, out
        self.input_on_grid = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            x = self.inp.qdq(x, self.input_on_grid)
            pooled = torch.onnx.ops.symbolic("GlobalAveragePool", [x], attrs={}, dtype=torch.float32,
                                             shape=(*x.shape[:2], *([1] * (x.dim() - 2))), version=1)
            return self.out.qdq(pooled)
        codes = arith.global_pool_codes(self.inp.codes(x), self.inp.scale, self.out.scale, self.out.qmin,
                                        self.out.qmax)
        return codes * self.out.scale
