"""A quantized Conv/Linear computed as onnxruntime's QLinearConv / QGemm computes it (see :mod:`.arith`).

The same forward serves eval and QAT: every rounding is a straight-through :func:`~qcompile.quantizers.ste.round_ste`
and the clamps pass gradients inside the range, so weights, bias and weight scales train through the
kernel's arithmetic (int32 bias, float32 multiplier, round half to even, saturation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qcompile.integer import arith


def float32_exact(x_ints: torch.Tensor, w_ints: torch.Tensor, bias_ints: torch.Tensor | None) -> bool:
    """Is every partial sum of ``Σ x·w + bias`` an integer below 2^24, so float32 adds it exactly in any order?
    Bound: ``max|x| · max over output channels of Σ|w|`` plus ``max|bias|``."""
    with torch.no_grad():
        bound = x_ints.abs().max() * w_ints.abs().flatten(1).sum(1).max()
        if bias_ints is not None:
            bound = bound + bias_ints.abs().max()
    return bool(bound < 2 ** 24)


def kernel_output(op: Callable, view: Callable, x_ints: torch.Tensor, x_scale: torch.Tensor, w_ints: torch.Tensor,
                  w_scale: torch.Tensor, bias_ints: torch.Tensor | None, out_scale: torch.Tensor | None,
                  out_range: tuple[int, int], exact: bool = True) -> torch.Tensor:
    """The kernel's output from the input codes: requantised to ``out_scale``'s codes and returned dequantized
    (codes · scale), or, without ``out_scale``, float32 as QGemm gives it: ``float32(acc + bias) · s_x·s_w``.

    ``w_scale`` is the weight's effective per-channel scale (BatchNorm folded in), the DequantizeLinear
    scale the export writes; ``bias_ints`` the int32 bias codes. ``exact``: sum in float64, exact at any
    size, so its float32 rounding is the kernel's ``cvtdq2ps``. Otherwise (training, where float32 convolutions
    are several times faster) float32 is used when it provably sums exactly too (:func:`float32_exact`).
    """
    exact = exact or not float32_exact(x_ints, w_ints, bias_ints)
    dtype = torch.float64 if exact else torch.float32
    acc = op(x_ints.to(dtype), w_ints.to(dtype))
    total = acc if bias_ints is None else acc + view(bias_ints.to(dtype), acc)
    if out_scale is None:
        return arith.to_float32(total) * view(x_scale.to(torch.float32) * w_scale.to(torch.float32), acc)
    m = view(arith.multiplier(x_scale, w_scale, out_scale), acc)
    return arith.saturate(arith.to_float32(total) * m, *out_range) * out_scale


def integer_forward(op, x_ints: torch.Tensor, x_scale: torch.Tensor, w_ints: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """A :class:`~qcompile.quantized_ops.QuantizedOp`'s output on the ``ort-int8`` target: in eval, and in
    training once its BatchNorm (if any) uses frozen statistics and the output grid's range is frozen."""
    bias_ints = None if bias is None else arith.int32_bias(bias, x_scale, w_scale)
    q = op.output_quantizer
    out_scale, out_range = (None, (0, 0)) if q is None else (q.scale(), (q.qmin, q.qmax))
    return kernel_output(op._op, op._out_view, x_ints, x_scale, w_ints, w_scale, bias_ints, out_scale, out_range,
                         exact=not op.training)
