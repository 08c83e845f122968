"""The numerical core of universal quantization (Agustsson & Theis, NeurIPS 2020), on torch tensors.

Everything works in units of the quantization step (y = x/Δ: integers are the grid):

* :func:`soft_round` s_α, :func:`soft_round_inverse` s_α⁻¹ and :func:`soft_round_conditional_mean`
  r_α(z) = E[Y | s_α(Y) + U = z] = s_α⁻¹(z − ½) + ½ — the soft-rounding channel r_α(s_α(y) + u),
  the identity as α → 0 and hard rounding as α → ∞;
* :func:`add_uniform_noise` (the training channel y + u) and :func:`perturb_and_apply` (f(y + u) with,
  optionally, the expected gradient f(y + ½) − f(y − ½) of the paper's §4.2 instead of the sampled one);
* :func:`universal_quantize` / :func:`universal_dequantize`: k = ⌊y − u⌉ and ŷ = k + u, whose error is
  uniform on (−½, ½) and independent of y when u is (:mod:`.dither` gives u from a shared seed).

Numerical guards (as in tensorflow_compression's round ops, whose unit tests ours mirror):
α is bounded to [``ALPHA_EPS``, ``ALPHA_HARD``] *before* any select, so the branch a select discards
has finite values and gradients (``torch.where`` multiplies a discarded gradient by 0, and 0·inf is NaN);
below ``ALPHA_EPS`` every function is the identity, above ``ALPHA_HARD`` its exact limit (hard
rounding); the inverse's atanh never sees |argument| ≥ 1 (those points take their exact limit) and its
offset is clipped to ±½. α may be a Python number or a tensor broadcastable against the input.
"""

from __future__ import annotations

from typing import Callable

import torch

ALPHA_EPS = 1e-3  # below: the identity (s_α differs from it by < 1e-7 there)
ALPHA_HARD = 1e4  # above: exact hard rounding (s_α is within 1e-30 of it away from ties)

Alpha = float | torch.Tensor


def _alphas(alpha: Alpha, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α as given, α bounded to [ALPHA_EPS, ALPHA_HARD]) as tensors on ``like``'s device and dtype."""
    alpha = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    return alpha, alpha.clamp(ALPHA_EPS, ALPHA_HARD)


def _select(alpha: torch.Tensor, identity: torch.Tensor, soft: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return torch.where(alpha < ALPHA_EPS, identity, torch.where(alpha > ALPHA_HARD, hard, soft))


def _cell(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, ρ): the cell centre m(y) = ⌊y⌋ + ½ and the offset ρ = y − m ∈ [−½, ½)."""
    m = torch.floor(y) + 0.5
    return m, y - m


def soft_round(y: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """s_α(y) = m + tanh(α·ρ) / (2·tanh(α/2)): fixes integers and half-integers, flat near integers.

    Limits: y for α < ALPHA_EPS; hard rounding m + ½·sign(ρ) for α > ALPHA_HARD (a half-integer,
    where ρ = 0, stays itself, as it does for every α).
    """
    alpha, bounded = _alphas(alpha, y)
    m, rho = _cell(y)
    soft = m + torch.tanh(bounded * rho) / (2 * torch.tanh(bounded / 2))
    return _select(alpha, y, soft, m + 0.5 * torch.sign(rho))


def soft_round_inverse(z: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """s_α⁻¹(z) = m + atanh(2·tanh(α/2)·ρ) / α, the offset clipped to ±½.

    Limits: z for α < ALPHA_EPS; for α > ALPHA_HARD, z at integers (which s_α fixes) and the cell
    centre ⌊z⌋ + ½ elsewhere (= ⌈z⌉ − ½). Where float32 rounds tanh(α/2) to 1, the argument of atanh
    reaches −1 exactly at integers: those points take their limit (the offset −½) through a select,
    with atanh evaluated at 0 in the discarded branch, so values and gradients stay finite.
    """
    alpha, bounded = _alphas(alpha, z)
    m, rho = _cell(z)
    argument = 2 * torch.tanh(bounded / 2) * rho
    saturated = argument.abs() >= 1
    safe = torch.where(saturated, torch.zeros_like(argument), argument)
    offset = torch.where(saturated, 0.5 * torch.sign(argument), torch.atanh(safe) / bounded).clamp(-0.5, 0.5)
    hard = torch.where(rho == -0.5, z, m)
    return _select(alpha, z, m + offset, hard)


def soft_round_conditional_mean(z: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """r_α(z) = s_α⁻¹(z − ½) + ½: the mean of Y given s_α(Y) + U = z, for Y locally uniform (its
    set {y : |s_α(y) − z| < ½} has length exactly 1). The identity as α → 0, rounding as α → ∞."""
    return soft_round_inverse(z - 0.5, alpha) + 0.5


def uniform_noise(like: torch.Tensor, generator: torch.Generator | None = None, levels: int = 0) -> torch.Tensor:
    """Fresh i.i.d. offsets of ``like``'s shape: U(−½, ½), or uniform over the centres of ``levels``
    equal cells (the discretised dither of :mod:`qcompile.runtime.dither`) when ``levels`` ≥ 2."""
    if levels:
        j = torch.randint(0, levels, like.shape, generator=generator, device=like.device)
        return ((2 * j + 1 - levels).to(like.dtype)) / (2 * levels)
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype) - 0.5


def add_uniform_noise(y: torch.Tensor, generator: torch.Generator | None = None, levels: int = 0) -> torch.Tensor:
    """y + u with fresh u (see :func:`uniform_noise`): the training channel of UN and UQ; d/dy = 1."""
    return y + uniform_noise(y, generator, levels)


class _ExpectedGradient(torch.autograd.Function):
    """Zero forward; backward multiplies the incoming gradient by a precomputed local derivative."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, derivative: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(derivative)
        return torch.zeros_like(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (derivative,) = ctx.saved_tensors
        return grad * derivative, None


def perturb_and_apply(f: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, u: torch.Tensor,
                      expected_grads: bool = False) -> torch.Tensor:
    """f(y + u) for a pointwise ``f``.

    With ``expected_grads``, the derivative with respect to y is replaced by its expectation over
    U ~ U(−½, ½): d/dy E[f(y + U)] = f(y + ½) − f(y − ½) (the paper's §4.2), which stays smooth where
    the sampled derivative of a steep f (soft rounding at large α) is spiky. The value is unchanged,
    and parameters of ``f`` still get their gradient at the sampled point.
    """
    if not expected_grads:
        return f(y + u)
    sampled = f((y + u).detach())
    with torch.no_grad():
        derivative = f(y + 0.5) - f(y - 0.5)
    return sampled + _ExpectedGradient.apply(y, derivative)


def clip_to_grid(y: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Clip y to [qmin, qmax] *before* noise or dither: then ⌊y − u⌉ ∈ [qmin, qmax] for every
    u ∈ (−½, ½), no code is clipped afterwards, and the error stays uniform at saturation too —
    the same clip in training and evaluation (a clip after the noise would break that)."""
    return y.clamp(qmin, qmax)


def universal_quantize(y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """k = ⌊y − u⌉ (integer-valued float tensor): what an encoder sends."""
    return torch.round(y - u)


def universal_dequantize(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """ŷ = k + u: what a decoder that shares u reconstructs."""
    return k + u
