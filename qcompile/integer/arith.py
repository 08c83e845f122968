"""onnxruntime's integer-kernel arithmetic (CPU, MLAS, x86), written in PyTorch.

What the fused kernels compute, read from MLAS and the QLinear* kernels, with every float32 step in the
same order so that PyTorch eval reproduces ORT bit for bit:

* QLinearConv / QGemm (u8 activations, s8 weights, zero point 0 on weights): int32 accumulation
  ``acc = Σ (x − zx)·w``, int32 bias added, then ``float32(acc + bias) · M`` with the per-channel
  multiplier ``M = (s_x · s_w[c]) / s_y`` computed in float32 left to right, rounded half to even
  (``cvtps2dq``), plus the output zero point, saturated to [0, 255];
* the int32 bias is ``round(b / (s_x · s_w))`` (what a DequantizeLinear(int32) bias initializer stores);
* QLinearGlobalAveragePool: the exact int32 sum times ``s_in / (s_out · float32(N))``, rounded half to even;
* QLinearAdd (the AVX2 kernel x86 CPUs run): on the stored u8 values, two float32 fused multiply-adds
  with the ratios ``s_a/s_c``, ``s_b/s_c`` and a fixed part holding the zero points, then rounded half to
  even and saturated.

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


def _fma32(x: torch.Tensor, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 ``fma(x, m, c)`` (one rounding): the product of a u8 value and a float32 is exact in float64."""
    return (x.to(torch.float64) * m.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def add_codes(a: torch.Tensor, a_grid: tuple, b: torch.Tensor, b_grid: tuple, out_grid: tuple) -> torch.Tensor:
    """QLinearAdd (MLAS AVX2 kernel) on codes; each grid is ``(scale, u8 zero point, qmin, qmax)``.

    On the stored u8 values ``A = a + za``, ``B = b + zb``: ``fixed = zc − (r_a·za + r_b·zb)``, then
    ``fma(A, r_a, fma(B, r_b, fixed))`` in float32 with ``r = s/s_c``, rounded half to even, saturated to
    u8; returned as codes (minus ``zc``), clamped to the output grid's range.
    """
    f = torch.float32
    (sa, za, *_), (sb, zb, *_), (sc, zc, qmin, qmax) = a_grid, b_grid, out_grid
    ra, rb = sa.to(f) / sc.to(f), sb.to(f) / sc.to(f)
    fixed = torch.tensor(float(zc), dtype=f) - (ra * float(za) + rb * float(zb))
    total = _fma32(a + za, ra, _fma32(b + zb, rb, fixed))
    return torch.clamp(saturate(total, 0, 255) - zc, qmin, qmax)
