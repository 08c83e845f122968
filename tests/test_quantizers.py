"""Quantizer math: codes ↔ values exact, ranges, STE gradients, per-channel scales."""

from __future__ import annotations

import pytest
import torch

from qcompile.errors import ConfigError, ExportError
from qcompile.quantizers import (ActivationQuantizer, BWNQuantizer, DoReFaQuantizer, UniformQuantizer,
                                 make_weight_quantizer)
from qcompile.quantizers.dorefa import dorefa_calibration

W = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.3

ALL = [UniformQuantizer(b, symmetric=s, per_channel=pc) for b in (1, 2, 3, 4, 8) for s in (True, False) for pc in (True, False)]
ALL += [DoReFaQuantizer(b) for b in (1, 2, 4)] + [BWNQuantizer(), BWNQuantizer(per_channel=True)]


@pytest.mark.parametrize("q", ALL, ids=lambda q: q.describe())
def test_codes_decode_exactly_to_forward(q):
    codes = q.codes(W)
    codes.validate()
    assert torch.equal(q(W), codes.dequantize())  # bit for bit
    assert codes.codes.dtype == torch.int64
    assert int(codes.codes.min()) >= codes.qmin and int(codes.codes.max()) <= codes.qmax
    assert codes.bits == q.bits


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_uniform_symmetric_grid(bits):
    q = UniformQuantizer(bits, symmetric=True, per_channel=True)
    c = q.codes(W)
    qmax = 2 ** (bits - 1) - 1
    # each channel's largest |w| maps to ±qmax with scale = max|w|/qmax
    assert torch.equal(c.codes.abs().amax(dim=(1, 2, 3)), torch.full((6,), qmax))
    assert torch.allclose(c.scale, W.abs().amax(dim=(1, 2, 3)) / qmax)
    assert c.signed and torch.all(c.zero_point == 0)
    # error of every weight is at most half a step
    err = (q(W) - W).abs() / c.scale.view(-1, 1, 1, 1)
    assert float(err.max()) <= 0.5 + 1e-5


def test_uniform_asymmetric_uses_zero_point_and_full_range():
    q = UniformQuantizer(4, symmetric=False, per_channel=False)
    w = torch.linspace(-0.5, 1.0, 16)
    c = q.codes(w)
    assert not c.signed
    assert int(c.codes.min()) == 0 and int(c.codes.max()) == 15
    assert int(c.zero_point) == 5  # −lo/scale = 0.5/0.1
    assert torch.allclose(q(w), w, atol=float(c.scale) / 2 + 1e-6)


def test_per_channel_scales_differ_per_channel():
    w = W.clone()
    w[0] *= 10
    pc = UniformQuantizer(4, per_channel=True).codes(w)
    pt = UniformQuantizer(4, per_channel=False).codes(w)
    assert pc.scale.shape == (6,) and pt.scale.dim() == 0
    assert float(pc.scale[0]) > 5 * float(pc.scale[1:].max())


def test_binary_quantizers():
    d = DoReFaQuantizer(1).codes(W)
    assert torch.equal(d.dequantize(), torch.where(W >= 0, 1.0, -1.0))  # DoReFa 1-bit = sign(W)
    b = BWNQuantizer().codes(W)
    alpha = W.abs().mean()
    assert torch.allclose(b.dequantize(), alpha * torch.where(W >= 0, 1.0, -1.0))
    assert b.bits == 1 and d.bits == 1
    u = UniformQuantizer(1, symmetric=True, per_channel=True)
    assert torch.allclose(u.codes(W).scale, W.abs().mean(dim=(1, 2, 3)))


def test_dorefa_k_bit_values():
    q = DoReFaQuantizer(2)
    levels = torch.tensor([-3.0, -1.0, 1.0, 3.0]) * torch.tensor(1 / 3)  # (2i − 3)/3 for the 2-bit codes i
    spread = torch.linspace(-2.0, 2.0, 101)  # tanh spreads these over all four levels
    assert torch.equal(torch.unique(q(spread)), levels)
    assert torch.equal(q.codes(spread).codes.unique(), torch.tensor([0, 1, 2, 3]))
    assert set(torch.unique(q(W)).tolist()) <= set(levels.tolist())
    assert set(q.codes(W).codes.unique().tolist()) <= {0, 1, 2, 3}


def test_ste_gradients():
    w = W.clone().requires_grad_(True)
    UniformQuantizer(4)(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # identity inside the range
    w.grad = None
    DoReFaQuantizer(1)(w).sum().backward()
    assert torch.allclose(w.grad, dorefa_calibration(W))  # (1 − tanh²W)/max|tanh W|
    w2 = torch.tensor([0.5, -2.0, 0.1, -0.3], requires_grad=True)
    BWNQuantizer()(w2).sum().backward()
    alpha = w2.detach().abs().mean()
    assert torch.allclose(w2.grad, alpha * torch.tensor([1.0, 0.0, 1.0, 1.0]))  # α·1{|W| ≤ 1}
    w2.grad = None
    BWNQuantizer(alpha_in_grad=False)(w2).sum().backward()
    assert torch.allclose(w2.grad, torch.tensor([1.0, 0.0, 1.0, 1.0]))


def test_activation_quantizer_calibrates_then_freezes():
    q = ActivationQuantizer(4, signed=False)
    q.train()
    q(torch.tensor([0.0, 3.0]))
    assert float(q.running_max) == 3.0
    q(torch.tensor([0.0, 13.0]))
    assert float(q.running_max) == pytest.approx(3.0 + 0.1 * 10.0)  # EMA, momentum 0.1
    q.freeze()
    q(torch.tensor([0.0, 100.0]))
    assert float(q.running_max) == pytest.approx(4.0)
    out = q(torch.tensor([-1.0, 2.1, 50.0]))
    step = 4.0 / 15
    assert torch.allclose(out, torch.tensor([0.0, 8 * step, 15 * step]))  # clipped to [0, 15]
    c = q.codes(torch.tensor([50.0]))
    assert c.codes.item() == 15 and c.bits == 4 and not c.signed


def test_activation_quantizer_signed_range_and_gradient():
    q = ActivationQuantizer(8, signed=True)
    q.train()
    x = torch.tensor([-2.0, 1.0, 0.5], requires_grad=True)
    y = q(x)
    assert q.qmin == -128 and q.qmax == 127
    assert torch.allclose(y, x.detach(), atol=2.0 / 127)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_uncalibrated_activation_quantizer_refuses_eval():
    q = ActivationQuantizer(8, signed=True).eval()
    with pytest.raises(ExportError, match="calibrat"):
        q(torch.ones(2))


def test_factory_rejects_bad_configs():
    with pytest.raises(ConfigError, match="BWN"):
        make_weight_quantizer("bwn", 4)
    with pytest.raises(ConfigError, match="unknown"):
        make_weight_quantizer("ternary", 2)
    with pytest.raises(ValueError):
        UniformQuantizer(9)
