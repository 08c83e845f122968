"""onnxruntime's integer-kernel arithmetic (CPU, MLAS, x86), written in PyTorch.

What the fused kernels compute, read from MLAS and the QLinear* kernels, with every float32 step in the
same order so that PyTorch eval reproduces ORT bit for bit:

* QLinearConv / QGemm (u8 activations, s8 weights, zero point 0 on weights): int32 accumulation
  ``acc = Σ (x − zx)·w``, int32 bias added, then ``float32(acc + bias) · M`` with the per-channel
  multiplier ``M = (s_x · s_w[c]) / s_y`` computed in float32 left to right, rounded half to even
  (``cvtps2dq``), plus the output zero point, saturated to [0, 255];
* the int32 bias is ``round(b / (s_x · s_w))`` (what a DequantizeLinear(int32) bias initializer stores);
* QLinearGlobalAveragePool: the exact int32 sum times ``s_in / (s_out · float32(N))``, rounded half to even;
* QLinearAdd: ``(a − za)·(s_a/s_c) + (b − zb)·(s_b/s_c)`` in float32, rounded half to even. The AVX2
  kernel uses fixed-point multipliers instead, so it can differ by one code from this model.

Rounding goes through :func:`round_ste`, so the same functions serve QAT (straight-through gradients).
"""

from __future__ import annotations

import torch

from qcompile.quantizers.ste import round_ste

INT32_MAX = 2 ** 31 - 1


def multiplier(x_scale: torch.Tensor, w_scale: torch.Tensor, y_scale: torch.Tensor) -> torch.Tensor:
    """``(s_x · s_w) / s_y`` in float32, the order QLinearConv computes its output scales in."""
    f = torch.float32
    return (x_scale.to(f) * w_scale.to(f)) / y_scale.to(f)


def int32_bias(bias: torch.Tensor, x_scale: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """The bias as int32 codes of scale ``s_x · s_w`` (integer-valued float32, clamped to int32)."""
    scale = x_scale.to(torch.float32) * w_scale.to(torch.float32)
    return torch.clamp(round_ste(bias / scale), -INT32_MAX, INT32_MAX)


def to_float32(acc: torch.Tensor) -> torch.Tensor:
    """An exact integer sum (float64 in eval, float32 in training) as float32, rounded half to even
    (``cvtdq2ps``)."""
    return acc.to(torch.float32)


def saturate(v: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Round half to even and clamp to the codes' range: the last step of every requantisation."""
    return torch.clamp(round_ste(v), qmin, qmax)


def global_pool_codes(codes: torch.Tensor, in_scale: torch.Tensor, out_scale: torch.Tensor, qmin: int,
                      qmax: int) -> torch.Tensor:
    """QLinearGlobalAveragePool (NCHW): the exact per-channel sum of the codes, then one float32 multiply."""
    n = codes[0, 0].numel()
    total = codes.to(torch.float64).flatten(2).sum(-1)  # exact, as the kernel's int32 sum
    f = torch.float32
    scale = in_scale.to(f) / (out_scale.to(f) * torch.tensor(float(n), dtype=f))
    pooled = saturate(to_float32(total) * scale, qmin, qmax)
    return pooled.reshape(*pooled.shape, *([1] * (codes.dim() - 2)))


def add_codes(a: torch.Tensor, a_scale: torch.Tensor, b: torch.Tensor, b_scale: torch.Tensor,
              out_scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """QLinearAdd with zero points 0 (signed codes are the u8 codes minus 128 on both sides, which cancels)."""
    f = torch.float32
    ra, rb = a_scale.to(f) / out_scale.to(f), b_scale.to(f) / out_scale.to(f)
    return saturate(a.to(f) * ra + b.to(f) * rb, qmin, qmax)
