"""Universal quantization's numerical core: soft rounding, its inverse, r_α, noise, expected gradients,
universal quantize/dequantize — against closed-form values, limits and statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qcompile.methods.universal import dither_offsets, ops
from qcompile.methods.universal.ops import (
    perturb_and_apply,
    soft_round,
    soft_round_conditional_mean,
    soft_round_inverse,
    universal_dequantize,
    universal_quantize,
)

GRID = torch.arange(-6, 7, dtype=torch.float32) / 2  # integers and half-integers in [-3, 3]
ALPHAS = (0.0, 1e-6, 1e-2, 5.0, 1e6)


def s_hand(y: float, a: float) -> float:
    """s_α(y) = ⌊y⌋ + ½ + tanh(α·ρ)/(2·tanh(α/2)), in float64 with the math module."""
    m = math.floor(y) + 0.5
    return m + math.tanh(a * (y - m)) / (2 * math.tanh(a / 2))


def s_inv_hand(z: float, a: float) -> float:
    m = math.floor(z) + 0.5
    return m + math.atanh(2 * math.tanh(a / 2) * (z - m)) / a


@pytest.mark.parametrize("y,a", [(0.25, 1.0), (-0.7, 3.0), (2.1, 0.5), (1.9, 8.0), (-1.26, 20.0)])
def test_soft_round_and_inverse_match_the_closed_forms(y, a):
    assert soft_round(torch.tensor([y]), a).item() == pytest.approx(s_hand(y, a), abs=1e-6)
    z = s_hand(y, a)
    assert soft_round_inverse(torch.tensor([z]), a).item() == pytest.approx(s_inv_hand(z, a), abs=1e-5)
    assert soft_round_conditional_mean(torch.tensor([z]), a).item() == pytest.approx(
        s_inv_hand(z - 0.5, a) + 0.5, abs=1e-5)


def test_hand_value_of_soft_round():
    # s_1(0.25) = 0.5 + tanh(-0.25) / (2 tanh(0.5)) = 0.5 - 0.244919 / 0.924234 = 0.235004
    assert soft_round(torch.tensor([0.25]), 1.0).item() == pytest.approx(0.235004, abs=1e-6)


@pytest.mark.parametrize("a", [0.5, 2.0, 7.0, 30.0])
def test_soft_round_fixes_integers_and_half_integers(a):
    assert torch.allclose(soft_round(GRID, a), GRID, atol=1e-6)
    assert torch.allclose(soft_round_inverse(GRID, a), GRID, atol=1e-5)


def test_tiny_alpha_is_the_identity():
    y = torch.linspace(-3, 3, 101)
    for a in (0.0, 1e-13, 1e-6):
        assert torch.equal(soft_round(y, a), y)
        assert torch.equal(soft_round_inverse(y, a), y)
        assert torch.allclose(soft_round_conditional_mean(y, a), y, atol=1e-6)
    # just above the switch the formula is within float rounding of the identity
    assert torch.allclose(soft_round(y, 2e-3), y, atol=1e-5)


def test_large_alpha_is_rounding_away_from_ties():
    y = torch.linspace(-3, 3, 1001)
    away = (y - torch.floor(y) - 0.5).abs() > 1e-3
    assert torch.allclose(soft_round(y, 2000.0)[away], torch.round(y)[away], atol=0.02)
    assert torch.equal(soft_round(y, 1e6)[away], torch.round(y)[away])  # the exact limit past ALPHA_HARD


def test_inverse_round_trips_at_alpha_2():
    y = torch.linspace(-3, 3, 1001)
    assert torch.allclose(soft_round_inverse(soft_round(y, 2.0), 2.0), y, atol=1e-5)


@pytest.mark.parametrize("a", [5000.0, 1e6])
def test_large_alpha_limits_of_inverse_and_conditional_mean(a):
    z = torch.linspace(-3, 3, 1001)
    off_grid = (z - torch.round(z)).abs() > 1e-3
    assert torch.allclose(soft_round_inverse(z, a)[off_grid], (torch.ceil(z) - 0.5)[off_grid], atol=1e-3)
    integers = torch.arange(-3.0, 4.0)
    assert torch.equal(soft_round_inverse(integers, a), integers)  # s_α fixes integers for every α
    away = (z - torch.floor(z) - 0.5).abs() > 1e-3
    assert torch.allclose(soft_round_conditional_mean(z, a)[away], torch.round(z)[away], atol=1e-3)


def test_conditional_mean_shifts_with_the_grid():
    z = torch.linspace(-2, 2, 401, dtype=torch.float64)  # r_α's slope reaches sinh α / α: float32 ulps would show
    for a in (1.0, 4.0, 12.0):
        assert torch.allclose(soft_round_conditional_mean(z + 1, a), soft_round_conditional_mean(z, a) + 1, atol=1e-5)


def test_conditional_mean_is_the_mean_of_y_given_the_noisy_soft_round():
    """r_α(z) = E[Y | s_α(Y) + U = z] for Y locally uniform: Monte Carlo over a wide uniform Y."""
    g = torch.Generator().manual_seed(0)
    a = 4.0
    y = torch.rand(2_000_000, generator=g, dtype=torch.float64) * 20 - 10
    z = soft_round(y, a) + torch.rand(y.shape, generator=g, dtype=torch.float64) - 0.5
    for centre in (-2.3, 0.1, 0.5, 3.77):
        near = (z - centre).abs() < 0.01
        assert y[near].mean().item() == pytest.approx(
            soft_round_conditional_mean(torch.tensor([centre], dtype=torch.float64), a).item(), abs=0.02)


@pytest.mark.parametrize("a", ALPHAS)
@pytest.mark.parametrize("fn", [soft_round, soft_round_inverse, soft_round_conditional_mean])
def test_values_and_gradients_are_finite_on_the_grid(fn, a):
    y = torch.cat([GRID, GRID + 1e-4, GRID - 1e-4]).requires_grad_(True)
    alpha = torch.tensor(a, requires_grad=True)
    out = fn(y, alpha)
    gy, ga = torch.autograd.grad(out.sum(), (y, alpha))
    assert torch.isfinite(out).all() and torch.isfinite(gy).all() and torch.isfinite(ga).all()


def test_gradient_of_soft_round_is_the_closed_form_slope():
    # s'(n) = α / sinh α at integers, α / (2 tanh(α/2)) at half-integers
    for a in (1.0, 5.0):
        y = torch.tensor([1.0, 1.5], requires_grad=True)
        (g,) = torch.autograd.grad(soft_round(y, a).sum(), y)
        assert g[0].item() == pytest.approx(a / math.sinh(a), rel=1e-5)
        assert g[1].item() == pytest.approx(a / (2 * math.tanh(a / 2)), rel=1e-5)


def test_perturb_and_apply_value_and_expected_gradient():
    y = torch.tensor([-1.2, 0.3, 2.0], requires_grad=True)
    u = torch.tensor([0.1, -0.4, 0.25])
    scale = torch.tensor(2.0, requires_grad=True)

    def f(t):
        return scale * t ** 3

    out = perturb_and_apply(f, y, u, expected_grads=True)
    assert torch.allclose(out, 2.0 * (y + u) ** 3)
    gy, gs = torch.autograd.grad(out.sum(), (y, scale))
    # d/dy E[f(y + U)] = f(y + ½) − f(y − ½) = scale · (3y² + ¼)
    assert torch.allclose(gy, 2.0 * (3 * y.detach() ** 2 + 0.25), atol=1e-5)
    assert gs.item() == pytest.approx(((y.detach() + u) ** 3).sum().item(), rel=1e-6)  # at the sampled point
    plain = perturb_and_apply(f, y, u, expected_grads=False)
    (gp,) = torch.autograd.grad(plain.sum(), y)
    assert torch.allclose(gp, 2.0 * 3 * (y.detach() + u) ** 2)


def test_expected_gradient_is_the_mean_of_the_sampled_gradients():
    """For r_α at α = 5, the sampled derivative averaged over U equals f(z + ½) − f(z − ½)."""
    a = 5.0
    f = lambda t: soft_round_conditional_mean(t, a)  # noqa: E731
    z = torch.tensor([0.1, 0.45, 1.8], dtype=torch.float64)
    u = torch.linspace(-0.5, 0.5, 200_001, dtype=torch.float64)[1:-1]
    zz = (z[:, None] + u[None, :]).requires_grad_(True)
    (g,) = torch.autograd.grad(f(zz).sum(), zz)
    expected = f(z + 0.5) - f(z - 0.5)
    assert torch.allclose(g.mean(dim=1), expected, atol=2e-3)
    # the sampled derivative is spiky (max slope sinh α / α ≈ 14.8 at α = 5), the expected one is not
    assert g.max().item() > 10 and expected.max().item() < 2


def test_uniform_noise_levels_are_cell_centres():
    g = torch.Generator().manual_seed(1)
    u = ops.uniform_noise(torch.empty(100_000), g, levels=4)
    assert sorted(set(u.tolist())) == [-0.375, -0.125, 0.125, 0.375]
    c = ops.uniform_noise(torch.empty(100_000), g)
    assert c.min() >= -0.5 and c.max() < 0.5 and abs(c.mean().item()) < 0.005


def test_universal_quantization_error_is_uniform_and_independent_of_x():
    step = 0.3
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 3, 200_000).astype(np.float32))
    u = dither_offsets(7, "test:weight", x.shape)
    k = universal_quantize(x / step, u)
    assert torch.equal(k, torch.round(k))
    error = (universal_dequantize(k, u) * step - x).double()
    assert error.abs().max().item() <= step / 2 + 1e-6
    e = (error / step).numpy()
    assert abs(e.mean()) < 0.003
    assert e.var() == pytest.approx(1 / 12, rel=0.02)
    counts, _ = np.histogram(e, bins=10, range=(-0.5, 0.5))
    assert np.all(np.abs(counts - len(e) / 10) < 5 * np.sqrt(len(e) / 10))  # flat within 5 sigma
    assert abs(np.corrcoef(e, x.numpy())[0, 1]) < 0.01
    # near grid points, rounding without the dither errs by almost nothing; the dithered error stays U(-1/2, 1/2)
    plain = (torch.round(x / step) - x / step).numpy()
    near = np.abs(plain) < 0.05
    assert plain[near].var() < 0.001 and e[near].var() == pytest.approx(1 / 12, rel=0.05)


def test_clip_before_dither_keeps_codes_in_range():
    y = torch.linspace(-9, 9, 10_001)
    u = dither_offsets(3, "clip:input", y.shape)
    k = universal_quantize(ops.clip_to_grid(y, -3, 3), u)
    assert k.min().item() >= -3 and k.max().item() <= 3
