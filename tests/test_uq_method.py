"""The ``universal`` plug-in: its channels' error laws, the α schedule, eval = export, and its settings."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from qcompile.errors import ConfigError
from qcompile.methods import get_method
from qcompile.methods.universal.options import UniversalOptions
from qcompile.methods.universal.quantizers import (UniversalActivationQuantizer, UniversalWeightQuantizer,
                                                   training_channel)
from qcompile.methods.universal.schedule import AlphaScheduleStep, alpha_at
from qcompile.quantized_ops import quantize_module
from qcompile.runtime.dither import dither_numerators
from qcompile.train import TrainConfig, cross_entropy, finetune


def weight_node(mode: str = "uq", export: str = "deterministic", bits: int = 4, **kw) -> UniversalWeightQuantizer:
    return UniversalWeightQuantizer(bits, True, "layer:weight", UniversalOptions(mode=mode, export=export, **kw))


def channel_error(mode: str, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """ŷ − y of the training channel on a weight whose per-channel step is exactly 1 (row max = qmax)."""
    node = weight_node(mode, bits=8).train()
    w = torch.cat([y, torch.full((y.shape[0], 1), 127.0)], dim=1)  # max|w| = 127 = qmax: Δ = 1
    torch.manual_seed(seed)
    ints, scale = node.decompose(w)
    assert torch.equal(scale, torch.ones(y.shape[0]))
    return (ints - w)[:, :-1]


def test_uq_training_error_is_uniform_and_independent_of_the_input():
    """uq.md §1.1: ⌊y − u⌉ + u − y is uniform on (−½, ½) whatever y — near integers and near ties alike."""
    y = torch.linspace(-100, 100, 200_001).reshape(1, -1)
    err = channel_error("uq", y)
    assert err.abs().max() < 0.5
    assert abs(err.mean().item()) < 3e-3 and abs(err.var().item() - 1 / 12) < 2e-3
    assert abs(np.corrcoef(err.flatten().numpy(), y.flatten().numpy())[0, 1]) < 1e-2
    frac = (y - torch.round(y)).flatten()
    for lo, hi in ((-0.05, 0.05), (0.4, 0.5)):  # same spread near integers and near half-integers
        part = err.flatten()[(frac >= lo) & (frac < hi)]
        assert abs(part.var().item() - 1 / 12) < 5e-3


def test_uq_and_un_training_channels_have_the_same_error_distribution():
    """In distribution UQ equals UN (y + u): the same deciles of the error, to sampling error."""
    y = torch.randn(1, 100_000) * 20
    qs = torch.linspace(0.1, 0.9, 9)
    uq, un = torch.quantile(channel_error("uq", y, 1), qs), torch.quantile(channel_error("un", y, 2), qs)
    assert torch.allclose(uq, un, atol=1e-2)
    assert torch.allclose(uq, qs - 0.5, atol=1e-2)  # uniform on (−½, ½): decile q at q − ½


def test_sr_channel_approaches_rounding_as_alpha_grows_and_its_gradients_stay_finite():
    y = torch.linspace(-20, 20, 4001).reshape(1, -1)
    node = weight_node("sr", bits=8).train()
    w = torch.cat([y, torch.full((1, 1), 127.0)], dim=1).requires_grad_()
    away_from_ties = ((y - torch.floor(y)) - 0.5).abs() > 0.05
    node.set_alpha(1e3)
    ints, _ = node.decompose(w)
    assert torch.allclose(ints[:, :-1][away_from_ties], torch.round(y)[away_from_ties], atol=3e-3)
    node.set_alpha(2e4)  # beyond ALPHA_HARD: the exact limit, r_α(⌊round(y) − u⌉ + u) = round(y)
    ints, _ = node.decompose(w)
    assert torch.equal(ints[:, :-1][away_from_ties], torch.round(y)[away_from_ties])
    for expected in (False, True):
        node = weight_node("sr", bits=8, expected_grads=expected).train()
        node.set_alpha(20.0)
        w.grad = None
        node.decompose(w)[0].sum().backward()
        assert torch.isfinite(w.grad).all()


def test_expected_gradient_changes_the_derivative_not_the_value():
    y = (torch.rand(1, 1000) - 0.5) * 40
    w = torch.cat([y, torch.full((1, 1), 127.0)], dim=1)
    out = {}
    for expected in (False, True):
        node = weight_node("sr", bits=8, expected_grads=expected).train()
        node.set_alpha(8.0)
        x = w.clone().requires_grad_()
        torch.manual_seed(3)
        value = node.decompose(x)[0]
        value.sum().backward()
        out[expected] = (value.detach(), x.grad)
    assert torch.equal(out[False][0], out[True][0])
    assert not torch.allclose(out[False][1], out[True][1])
    assert out[True][1][:, :-1].std() < out[False][1][:, :-1].std()  # the variance reduction of §1.3


@pytest.mark.parametrize("schedule,mid", [("geometric", math.sqrt(30.0)), ("linear", 15.5), ("constant", 1.0)])
def test_alpha_schedule_values(schedule, mid):
    s = UniversalOptions(alpha_start=1.0, alpha_end=30.0, alpha_schedule=schedule)
    end = 1.0 if schedule == "constant" else 30.0
    assert alpha_at(s, 0) == pytest.approx(1.0) and alpha_at(s, 1) == pytest.approx(end)
    assert alpha_at(s, 0.5) == pytest.approx(mid) and alpha_at(s, 7) == pytest.approx(end)


def test_alpha_schedule_step_sets_every_node_and_ends_at_alpha_end():
    settings = UniversalOptions(mode="sr", alpha_start=2.0, alpha_end=32.0)
    torch.manual_seed(0)
    conv = quantize_module(nn.Conv2d(1, 2, 3), UniversalWeightQuantizer(4, True, "c:weight", settings))
    conv.input_quantizer = UniversalActivationQuantizer(4, True, settings)
    model = nn.Sequential(conv, nn.Flatten(), quantize_module(nn.Linear(18, 3),
                                                              UniversalWeightQuantizer(4, True, "l:weight", settings)))
    model.train()
    step = AlphaScheduleStep(settings)
    step.setup(model, TrainConfig(epochs=1, device="cpu", lr=1e-3))
    step.plan_steps(5)
    seen = []
    for _ in range(5):
        step.step(model, torch.randn(4, 1, 5, 5), torch.randint(0, 3, (4,)), cross_entropy)
        seen.append(sorted({float(m.alpha) for m in model.modules() if hasattr(m, "set_alpha")}))
    assert [len(a) for a in seen] == [1] * 5  # every node (weights and activations) at the same α
    assert [a[0] for a in seen] == pytest.approx([2.0 * 16 ** (i / 4) for i in range(5)])
    restored = AlphaScheduleStep(settings)
    restored.setup(model, TrainConfig(epochs=1, device="cpu", lr=1e-3))
    restored.load_state_dict(step.state_dict())
    assert restored.steps_done == 5


@pytest.mark.parametrize("mode", ["un", "uq"])
def test_eval_mode_dither_is_exactly_what_the_codes_decode_to(mode):
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    node = weight_node(mode, export="dither", bits=3, levels=64).eval()
    ints, scale = node.decompose(w)
    codes = node.codes(w)
    assert torch.equal(codes.integers(), ints) and torch.equal(codes.dequantize(), ints * scale.reshape(-1, 1, 1, 1))
    assert codes.codes.min() >= -3 and codes.codes.max() <= 3 and codes.multiplier == 128
    n, denominator = dither_numerators(node.settings.seed, "layer:weight", w.shape, 64)  # numpy, the runtime's
    assert denominator == 128 and np.array_equal(codes.dither.numerators.numpy(), n)
    u = torch.from_numpy(n).float() / 128
    y = (w / (w.abs().amax(dim=(1, 2, 3)) / 3).reshape(-1, 1, 1, 1)).clamp(-3, 3)
    assert torch.equal(codes.codes.float(), torch.round(y - u))  # k = ⌊y − u⌉
    assert ((ints / 128 - y).abs() <= 0.5).all()  # |ŷ − y| ≤ ½ step
    assert torch.equal(ints, node.decompose(w)[0])  # the same offsets every call (seeded, not sampled)


def test_deterministic_export_rounds_and_training_channel_switch_turns_noise_on():
    torch.manual_seed(0)
    w = torch.randn(4, 10)
    node = weight_node("uq").eval()
    ints, scale = node.decompose(w)
    assert torch.equal(ints, torch.round(w / scale.reshape(-1, 1)).clamp(-7, 7))
    holder = nn.Module()
    holder.q = node
    with training_channel(holder):
        torch.manual_seed(1)
        noisy, _ = node.decompose(w)
    assert not torch.equal(noisy, ints) and node.noisy is None


def test_activation_node_rounds_outside_training_and_dithers_inside():
    q = UniversalActivationQuantizer(4, False, UniversalOptions(mode="uq")).train()
    x = torch.rand(1000) * 3
    torch.manual_seed(0)
    q.decompose(x)  # observes the range
    q.freeze()
    ints, scale = q.decompose(x)
    assert not torch.equal(ints, torch.round(ints))  # k + u: not integers in training
    q.eval()
    ints, scale = q.decompose(x)
    assert torch.equal(ints, torch.clamp(torch.round(x / scale), 0, 15))
    assert torch.equal(q.codes(x).integers(), ints)


@pytest.mark.parametrize("options,words", [
    ({"mode": "fancy"}, "unknown universal mode"),
    ({"mode": "sr", "export": "dither"}, "cannot deploy soft rounding"),
    ({"levels": 48}, "power of two"),
    ({"alpha_start": 0.0}, "alpha_start"),
    ({"alpha_end": float("inf")}, "alpha_end"),
    ({"seed": -1}, "seed"),
    ({"sharpness": 3}, "unknown universal-quantization option"),
])
def test_bad_settings_are_config_errors_with_a_hint(options, words):
    with pytest.raises(ConfigError) as e:
        get_method("universal", options)
    assert words in e.value.message and e.value.hint


def test_one_bit_weights_and_other_quantizers_are_refused():
    with pytest.raises(ConfigError, match="--w-bits 2..8"):
        weight_node(bits=1)
    from qcompile.plan import SitePlan

    with pytest.raises(ConfigError, match="symmetric uniform grid"):
        get_method("universal").weight_quantizer(SitePlan("fc", "Linear", 4, None, "dorefa", False))


def test_sr_training_resumed_mid_run_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    """The α schedule's step counter and the noise's RNG come back with the checkpoint."""
    settings = UniversalOptions(mode="sr", alpha_start=1.0, alpha_end=16.0)

    def model(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        conv = quantize_module(nn.Conv2d(1, 4, 3), UniversalWeightQuantizer(3, True, "c:weight", settings))
        conv.input_quantizer = UniversalActivationQuantizer(4, True, settings)
        return nn.Sequential(conv, nn.ReLU(), nn.Flatten(),
                             quantize_module(nn.Linear(64, 3), UniversalWeightQuantizer(3, True, "l:weight", settings)))

    g = torch.Generator().manual_seed(1)
    data = SimpleNamespace(x=torch.randn(48, 1, 6, 6, generator=g).numpy(), y=torch.randint(0, 3, (48,), generator=g).numpy())
    config = dict(epochs=2, batch_size=16, lr=1e-2, optimizer="adam", device="cpu")
    full = model()
    finetune(full, data, None, TrainConfig(**config), strategy=AlphaScheduleStep(settings), progress=False)
    first = model()
    finetune(first, data, None, TrainConfig(**config, max_steps=4, checkpoint_every=2), strategy=AlphaScheduleStep(settings),
             checkpoint_dir=tmp_path, progress=False)
    resumed = model(seed=9)
    finetune(resumed, data, None, TrainConfig(**config), strategy=AlphaScheduleStep(settings), checkpoint_dir=tmp_path,
             resume=True, progress=False)
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert float(full[0].weight_quantizer.alpha) == pytest.approx(16.0)
