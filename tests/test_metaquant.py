"""MetaQuant plug-in: the step's order and algebra on hand-checkable examples (the paper's Alg. 1)."""

from __future__ import annotations

import copy
import io
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import fx, nn

from qcompile.errors import ConfigError
from qcompile.methods import get_method
from qcompile.methods.metaquant import (MetaQuantizer, MetaQuantOptions, MetaQuantStep, MetaQuantWarning,
                                        RefinedOptimizer, build_meta_net)
from qcompile.methods.metaquant.chunking import MetaPass
from qcompile.methods.metaquant.memory import PeakMemory
from qcompile.passes.strip_for_export import StripForExport
from qcompile.plan import SitePlan
from qcompile.quantized_ops import QuantizedOp, quantize_module
from qcompile.quantizers import BWNQuantizer, DoReFaQuantizer
from qcompile.train import TrainConfig, cross_entropy, finetune
from qcompile.train.code_flips import FrozenCodesWarning

QUANTIZERS = {"dorefa": lambda: DoReFaQuantizer(1), "bwn": lambda: BWNQuantizer(per_channel=False)}


def small_cnn(kind: str = "dorefa", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        quantize_module(nn.Conv2d(1, 4, 3, padding=1), MetaQuantizer(QUANTIZERS[kind]())),
        nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        quantize_module(nn.Linear(4 * 4 * 4, 3), MetaQuantizer(QUANTIZERS[kind]())),
    )


def batches(n: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n)]


def strategy_for(model: nn.Module, optimizer: str = "sgd", lr: float = 0.05, momentum: float = 0.0,
                 weight_decay: float = 0.0, **options) -> MetaQuantStep:
    s = MetaQuantStep(MetaQuantOptions(**options))
    s.setup(model, TrainConfig(lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                               schedule="step", step_size=1, gamma=0.5, device="cpu"))
    return s


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def phi_grads(s: MetaQuantStep) -> list[torch.Tensor | None]:
    return [p.grad for p in s.meta_net.parameters()]


# ---------------------------------------------------------------- first iteration, φ's gradient path


def test_first_iteration_updates_nothing_and_only_harvests():
    model = small_cnn()
    s = strategy_for(model, optimizer="adam", meta="multifc")
    before = params_of(model)
    s.step(model, *batches(1)[0], cross_entropy)
    after = params_of(model)
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)
    assert all(g is None for g in phi_grads(s))
    assert "meta_loss" not in s.extra_metrics
    for _, w, q in s.layers:
        assert q.grad_hat is not None and q.grad_hat.shape == w.shape
        assert torch.equal(q.w_tilde, q.pre_quantize(w.detach()))


def test_phi_gets_no_gradient_when_lr_is_zero():
    model = small_cnn()
    s = strategy_for(model, meta="fc-grad")
    data = batches(2)
    s.step(model, *data[0], cross_entropy)
    s.optimizer.param_groups[0]["lr"] = 0.0
    s.step(model, *data[1], cross_entropy)
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in phi_grads(s))


@pytest.mark.parametrize("kind", ["dorefa", "bwn"])
def test_phi_gradient_is_the_section_1_6_chain(kind):
    """∂ℓ/∂φ = Σ_i g_Ŵ,t,i · J_i · (−lr) · calib_i · ∂M(g_Ŵ,t−1,i)/∂φ, J = ∂Ŵ/∂W_meta under the STE."""
    torch.manual_seed(3)
    layer = quantize_module(nn.Linear(5, 2, bias=False), MetaQuantizer(QUANTIZERS[kind]()))
    model, lr = nn.Sequential(layer), 0.05
    s = strategy_for(model, lr=lr, meta="fc-grad")
    x, y = torch.randn(3, 5), torch.tensor([0, 1, 1])
    s.step(model, x, y, cross_entropy)
    q, w = layer.weight_quantizer, layer.weight.detach().clone()
    g_prev, net_before = q.grad_hat.clone(), copy.deepcopy(s.meta_net)
    s.step(model, x, y, cross_entropy)
    w_meta, g_now = layer.weight.detach(), q.grad_hat  # paper mode: the forward used the committed weight
    if kind == "dorefa":
        t = torch.tanh(w_meta)
        jac = (1 - t * t) / t.abs().max()
    else:
        jac = w_meta.abs().mean() * (w_meta.abs() <= 1).float()
    m = net_before(g_prev.reshape(-1), None)[0].reshape(w.shape)
    surrogate = (g_now * jac * (-lr) * q.calibration(w) * m).sum()
    expected = torch.autograd.grad(surrogate, list(net_before.parameters()))
    for got, want in zip(phi_grads(s), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_w_grad_is_calib_times_mg_before_adam_refinement():
    model = small_cnn("dorefa")
    s = strategy_for(model, optimizer="adam", lr=0.01, weight_decay=5e-4, meta="multifc")
    data = batches(2)
    s.step(model, *data[0], cross_entropy)
    name, w, q = s.layers[1]
    w0, net0 = w.detach().clone(), copy.deepcopy(s.meta_net)
    mg = net0(q.grad_hat.reshape(-1), q.w_tilde.reshape(-1))[0].detach().reshape(w.shape)
    s.step(model, *data[1], cross_entropy)
    cg = q.calibration(w0) * mg
    torch.testing.assert_close(w.grad, cg)
    ref = w0.clone().requires_grad_()
    ref.grad = cg.clone()
    torch.optim.Adam([ref], lr=0.01, weight_decay=5e-4).step()
    torch.testing.assert_close(w.detach(), ref.detach())


@pytest.mark.parametrize("meta, bias", [("fc-grad", False), ("multifc", True)])
def test_affine_meta_net_is_collapsed_exactly(meta, bias):
    """A Linear-only FC (the paper's bias-free one, or with biases) runs in O(N) as c·x + d, with the
    same value and φ-gradient as running its layers."""
    torch.manual_seed(0)
    net = build_meta_net(MetaQuantOptions(meta=meta, hidden=10, layers=3, bias=bias))
    x, g = torch.randn(50), torch.randn(50)
    out, _ = net(g, x)
    layered = net.fc((g if meta == "fc-grad" else x).unsqueeze(1)).squeeze(1) * (1 if meta == "fc-grad" else g)
    torch.testing.assert_close(out, layered)
    params = list(net.parameters())
    assert len(params) == (6 if bias else 3)
    collapsed = torch.autograd.grad(out.square().sum(), params)
    for a, b in zip(collapsed, torch.autograd.grad(layered.square().sum(), params)):
        torch.testing.assert_close(a, b)
    c, d = net.gain()
    at_zero, at_one = (float(net.fc(torch.full((1, 1), v)).detach()) for v in (0.0, 1.0))
    assert d == pytest.approx(at_zero, rel=1e-5, abs=1e-7) and (d != 0) == bias
    assert c == pytest.approx(at_one - at_zero, rel=1e-5)


def test_lstm_state_is_carried_and_detached():
    model = small_cnn("bwn")
    s = strategy_for(model, meta="lstmfc", hidden=8)
    data = batches(3)
    name, w, q = s.layers[0]
    s.step(model, *data[0], cross_entropy)
    assert name not in s.lstm_state  # first iteration: no meta-gradient, no state yet
    w_tilde_1 = q.w_tilde.reshape(-1, 1).clone()
    s.step(model, *data[1], cross_entropy)
    h2, c2 = s.lstm_state[name]
    assert not h2.requires_grad and not c2.requires_grad
    cell_before = copy.deepcopy(s.meta_net.cell)
    w_tilde_2 = q.w_tilde.reshape(-1, 1).clone()
    s.step(model, *data[2], cross_entropy)
    h3, c3 = s.lstm_state[name]
    want_h, want_c = cell_before(w_tilde_2, (h2, c2))  # from the carried state, not from zeros
    torch.testing.assert_close(h3, want_h.detach())
    torch.testing.assert_close(c3, want_c.detach())
    assert not torch.allclose(h3, cell_before(w_tilde_2)[0])
    assert w_tilde_1.shape == w_tilde_2.shape


# ---------------------------------------------------------------- forward modes, by hand


def one_weight_layer(kind: str, weights) -> nn.Module:
    layer = quantize_module(nn.Linear(2, 1, bias=False), MetaQuantizer(QUANTIZERS[kind]()))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    return nn.Sequential(layer)


def set_gain(s: MetaQuantStep, w1: float, w2: float) -> None:
    """FC-Grad with hidden=1: M(g) = w2·w1·g."""
    with torch.no_grad():
        s.meta_net.fc[0].weight.fill_(w1)
        s.meta_net.fc[1].weight.fill_(w2)


def sum_objective(outputs, targets, inputs):
    return outputs.sum()  # ∂ℓ/∂Ŵ = x for every iteration: g_Ŵ = G = [[1, 2]]


@pytest.mark.parametrize("mode, forwards, commits", [
    # lr 0.1, gain c = 0.5, SGD momentum 0.5, G = [1, 2]: lr·c·G = [0.05, 0.1]
    ("paper", [[0.5, -0.25], [0.45, -0.35], [0.375, -0.5]], [[0.5, -0.25], [0.45, -0.35], [0.375, -0.5]]),
    # reference: the forward uses the previous iteration's direction (zero on iteration 2)
    ("reference", [[0.5, -0.25], [0.5, -0.25], [0.40, -0.45]], [[0.5, -0.25], [0.45, -0.35], [0.375, -0.5]]),
])
def test_forward_modes_on_a_hand_computed_bwn_layer(mode, forwards, commits):
    model = one_weight_layer("bwn", [0.5, -0.25])
    s = strategy_for(model, lr=0.1, momentum=0.5, meta="fc-grad", hidden=1, meta_lr=0.0, forward_mode=mode)
    set_gain(s, 2.0, 0.25)
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([0])
    _, w, q = s.layers[0]
    for forward_value, committed in zip(forwards, commits):
        s.step(model, x, y, sum_objective)
        torch.testing.assert_close(q.w_tilde, torch.tensor([forward_value]))  # BWN: W̃ = W_meta
        torch.testing.assert_close(w.detach(), torch.tensor([committed]))
    assert s.extra_metrics["meta_gain"] == pytest.approx(0.5)


def test_paper_forward_on_a_hand_computed_dorefa_layer():
    """W_2 = W_1 − lr·c·calib(W_1)·G with calib = (1 − tanh²W)/max|tanh W|; the forward uses W_2 itself."""
    w1 = [0.5, -0.25]
    model = one_weight_layer("dorefa", w1)
    s = strategy_for(model, lr=0.1, meta="fc-grad", hidden=1, meta_lr=0.0)
    set_gain(s, 2.0, 0.25)
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([0])
    tmax = max(abs(math.tanh(v)) for v in w1)
    w2 = [v - 0.1 * 0.5 * (1 - math.tanh(v) ** 2) / tmax * gv for v, gv in zip(w1, [1.0, 2.0])]
    s.step(model, x, y, sum_objective)
    s.step(model, x, y, sum_objective)
    _, w, q = s.layers[0]
    torch.testing.assert_close(w.detach(), torch.tensor([w2]))
    t2max = max(abs(math.tanh(v)) for v in w2)
    torch.testing.assert_close(q.w_tilde, torch.tensor([[math.tanh(v) / (2 * t2max) + 0.5 for v in w2]]))


def test_paper_forward_value_is_bitwise_the_committed_weight():
    model = small_cnn("dorefa")
    s = strategy_for(model, optimizer="adam", meta="multifc")
    data = batches(3)
    for inputs, targets in data:
        s.step(model, inputs, targets, cross_entropy)
    for _, w, q in s.layers:
        assert torch.equal(q.w_tilde, q.pre_quantize(w.detach()))


# ---------------------------------------------------------------- export, optimizer, memory, resume


def decoded(codes) -> torch.Tensor:
    return (codes.codes.to(torch.float32) * codes.multiplier + codes.offset) * codes.scale


@pytest.mark.parametrize("kind", ["dorefa", "bwn"])
def test_exported_codes_are_sign_and_alpha_sign(kind):
    model = small_cnn(kind)
    s = strategy_for(model, meta="fc-grad")
    for inputs, targets in batches(3):
        s.step(model, inputs, targets, cross_entropy)

    class Leaves(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, QuantizedOp) or super().is_leaf_module(m, qualname)

    gm = fx.GraphModule(model, Leaves().trace(model))
    StripForExport().call(gm)
    for m in gm.modules():
        if isinstance(m, QuantizedOp):
            q, w = m.weight_quantizer, m.weight.detach()
            assert type(q) is (DoReFaQuantizer if kind == "dorefa" else BWNQuantizer)
            assert torch.count_nonzero(w) == w.numel()
            want = torch.sign(w) if kind == "dorefa" else w.abs().mean() * torch.sign(w)
            assert torch.equal(decoded(q.codes(w)), want)


@pytest.mark.parametrize("kind, kwargs", [("sgd", dict(momentum=0.9, weight_decay=1e-3)),
                                          ("adam", dict(weight_decay=5e-4))])
def test_refined_optimizer_equals_torch_optimizers(kind, kwargs):
    torch.manual_seed(0)
    p = torch.randn(7, requires_grad=True)
    ref = p.detach().clone().requires_grad_()
    ours = RefinedOptimizer([p], kind, lr=0.1, **kwargs)
    theirs = (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)([ref], lr=0.1, **kwargs)
    for i in range(3):
        g = torch.randn(7)
        p.grad, ref.grad = g.clone(), g.clone()
        if i == 1:  # refine first (the paper-mode path), then step applies the parked direction
            direction = ours.refine(p)
            expected = RefinedOptimizer.commit_value(p, direction, 0.1)
            ours.step()
            assert torch.equal(p.detach(), expected)
        else:
            ours.step()
        theirs.step()
        torch.testing.assert_close(p.detach(), ref.detach())


@pytest.mark.parametrize("options", [dict(meta="multifc", nonlinearity="tanh", bias=True), dict(meta="lstmfc")])
def test_chunked_recomputation_equals_keeping_the_graph(options):
    runs = []
    for chunk in (0, 5):
        model = small_cnn("bwn")
        s = strategy_for(model, hidden=8, chunk_size=chunk, **options)
        run_steps(model, s, batches(3))
        runs.append(([g.clone() for g in phi_grads(s)], params_of(model)))
    (grads_a, params_a), (grads_b, params_b) = runs
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b)
    for k in params_a:
        torch.testing.assert_close(params_a[k], params_b[k])


def test_chunking_bounds_meta_net_activation_memory():

    net = build_meta_net(MetaQuantOptions(meta="multifc", hidden=16, nonlinearity="tanh"))
    g, w_tilde = torch.randn(4000), torch.rand(4000)
    peaks = []
    for chunk in (0, 500):
        with PeakMemory("cpu") as meter:
            meta = MetaPass(net, g, w_tilde, None, chunk)
            meta.forward()
            meta.backward(torch.ones(4000))
        peaks.append(meter.peak_bytes)
    assert meter.kind == "cpu-autograd"
    assert peaks[0] >= 4000 * 16 * 4 and peaks[1] * 4 < peaks[0]


def run_steps(model, s, data):
    for inputs, targets in data:
        s.step(model, inputs, targets, cross_entropy)


@pytest.mark.parametrize("options", [dict(meta="lstmfc", hidden=6, forward_mode="reference", meta_lr_decay=True),
                                     dict(meta="multifc", hidden=6)])
def test_state_dict_round_trip_resumes_exactly(options):
    data = batches(5)
    model = small_cnn("dorefa")
    s = strategy_for(model, optimizer="adam", **options)
    run_steps(model, s, data[:3])
    s.epoch_end(0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "strategy": s.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed = small_cnn("dorefa", seed=99)
    resumed.load_state_dict(saved["model"])
    r = strategy_for(resumed, optimizer="adam", **options)
    r.load_state_dict(saved["strategy"])
    assert r.lr == s.lr and r.meta_optimizer.param_groups[0]["lr"] == s.meta_optimizer.param_groups[0]["lr"]
    run_steps(model, s, data[3:])
    run_steps(resumed, r, data[3:])
    for k, v in params_of(model).items():
        assert torch.equal(v, params_of(resumed)[k]), k
    for a, b in zip(s.meta_net.parameters(), r.meta_net.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- plug-in surface


def test_options_are_validated_with_hints():
    assert MetaQuantOptions(nonlinearity="none").nonlinearity is None
    assert MetaQuantOptions(meta="lstmfc").fc_layers == 1 and MetaQuantOptions().fc_layers == 2
    with pytest.raises(ConfigError, match="accepted options"):
        MetaQuantOptions.from_dict({"hiden": 10})
    with pytest.raises(ConfigError, match="meta-network"):
        MetaQuantOptions(meta="lstm")
    with pytest.raises(ConfigError, match="forward_mode"):
        MetaQuantOptions(forward_mode="stale")
    s = strategy_for(small_cnn(), meta="fc-grad", nonlinearity="relu")
    assert s.meta_net.gain() is None  # a nonlinear meta-net has no single gain
    assert MetaQuantOptions(bias=None).bias is None
    with pytest.raises(ConfigError, match="bias must be true or false"):
        MetaQuantOptions(bias="yes")


def test_method_wraps_dorefa_and_bwn_and_refuses_others():
    method = get_method("metaquant", {"meta": "fc-grad"})
    site = SitePlan(name="fc", op="Linear", w_bits=1, a_bits=None, quantizer="dorefa", per_channel=False)
    q = method.weight_quantizer(site)
    assert isinstance(q, MetaQuantizer) and isinstance(q.export_quantizer(), DoReFaQuantizer)
    assert method.step_strategy().options.meta == "fc-grad"
    with pytest.raises(ConfigError, match="dorefa or bwn"):
        method.weight_quantizer(SitePlan("fc", "Linear", 4, None, "uniform", True))
    by_policy = SitePlan("conv1", "Conv2d", 8, 8, "uniform", True, reason="first layer at 8 bits by policy")
    assert not isinstance(method.weight_quantizer(by_policy), MetaQuantizer)


def test_finetune_loop_runs_metaquant_and_records_its_metrics():
    rng = np.random.default_rng(0)
    data = SimpleNamespace(x=rng.standard_normal((12, 1, 4, 4)).astype(np.float32), y=rng.integers(0, 3, 12))
    model = small_cnn("bwn")
    strategy = MetaQuantStep(MetaQuantOptions(meta="fc-grad"), measure_memory=True)
    result = finetune(model, data, data, TrainConfig(epochs=1, batch_size=4, lr=0.01, device="cpu"),
                      strategy=strategy, progress=False)
    assert result.completed and result.steps == 3
    last = result.step_records[-1]
    assert {"meta_loss", "meta_grad_norm", "meta_gain", "peak_mem_mb"} <= set(last)
    assert strategy.state_bytes() > 0


@pytest.mark.parametrize("quantizer", ["dorefa", "bwn"])
def test_compile_finetune_export_runs_on_onnxruntime_without_meta_machinery(tmp_path, quantizer):
    import qcompile
    from conftest import TinyBNNet
    from qcompile.runtime import Session

    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), method="metaquant", w_bits=1, a_bits=None,
                          quantizer=quantizer, method_options={"meta": "lstmfc", "hidden": 4}, data="digits")
    before = {k: v.clone() for k, v in cm.graph_module.state_dict().items()}
    cm.finetune(epochs=1, lr=0.01, optimizer="sgd", max_steps=4, progress=False, batch_size=32)
    assert any(not torch.equal(before[k], v) for k, v in cm.graph_module.state_dict().items() if "weight" in k)
    deployable = cm.deployable()
    quantizers = [m.weight_quantizer for m in deployable.modules() if isinstance(m, QuantizedOp)]
    assert quantizers and not any(isinstance(q, MetaQuantizer) for q in quantizers)
    path = tmp_path / "m.onnx"
    cm.export(path)
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = deployable(torch.from_numpy(x)).numpy()
    assert np.abs(Session(path, providers="cpu").predict(x) - ref).max() <= 1e-4


# ---------------------------------------------------------------- MultiFC on a sign-symmetric quantizer


def bwn_classifier(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """One BWN-quantized Linear layer and 64 samples labelled by a ±1 teacher it can represent."""
    torch.manual_seed(seed)
    model = nn.Sequential(quantize_module(nn.Linear(8, 3, bias=False), MetaQuantizer(BWNQuantizer())))
    g = torch.Generator().manual_seed(1)
    teacher, x = torch.sign(torch.randn(3, 8, generator=g)), torch.randn(64, 8, generator=g)
    return model, x, (x @ teacher.T).argmax(1)


def test_paper_multifc_on_bwn_multiplies_every_weight_and_never_flips_a_sign():
    """Bias-free MultiFC: mg = g ⊙ c·W̃ with W̃ = W, so SGD gives W ← W·(1 − lr·c·g): while lr·|c·g| < 1
    (checked at every step) the factor is positive and no sign can change, though φ keeps training."""
    model, x, y = bwn_classifier()
    lr = 0.05
    with pytest.warns(MetaQuantWarning, match="cannot change a weight's sign"):
        s = strategy_for(model, lr=lr, meta="multifc", bias=False)
    assert not s.meta_net_bias and "cannot change a weight's sign" in s.frozen_codes_cause()[0]
    _, w, q = s.layers[0]
    s.step(model, x, y, cross_entropy)  # iteration 1 harvests only
    signs, gains = torch.sign(w.detach()).clone(), []
    for _ in range(40):
        c, d = s.meta_net.gain()
        g, before = q.grad_hat.clone(), w.detach().clone()
        assert d == 0.0 and float((lr * c * g).abs().max()) < 1
        s.step(model, x, y, cross_entropy)
        torch.testing.assert_close(w.detach(), before * (1 - lr * c * g))
        gains.append(c)
    assert torch.equal(torch.sign(w.detach()), signs)
    assert not torch.equal(w.detach(), before) and max(gains) - min(gains) > 0.01


def test_default_multifc_on_bwn_has_biases_and_flips_signs():
    model, x, y = bwn_classifier()
    lr = 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = strategy_for(model, lr=lr, meta="multifc")
    assert s.meta_net_bias and s.frozen_codes_cause() is None
    assert all(m.bias is not None for m in s.meta_net.fc)
    _, w, q = s.layers[0]
    s.step(model, x, y, cross_entropy)
    (c, d), g, before = s.meta_net.gain(), q.grad_hat.clone(), w.detach().clone()
    s.step(model, x, y, cross_entropy)
    torch.testing.assert_close(w.detach(), before - lr * g * (c * before + d))  # M(W̃) = c·W̃ + d
    signs = torch.sign(w.detach()).clone()
    run_steps(model, s, [(x, y)] * 40)
    assert int((torch.sign(w.detach()) != signs).sum()) > 0


def test_the_bias_default_depends_on_the_quantizer_not_its_name():
    assert MetaQuantOptions().resolved_bias(sign_symmetric=True)  # MultiFC on BWN
    assert not MetaQuantOptions().resolved_bias(sign_symmetric=False)  # MultiFC on DoReFa: the paper's
    assert not MetaQuantOptions(meta="fc-grad").resolved_bias(sign_symmetric=True)
    assert MetaQuantOptions(bias=False).freezes_signs(True) and not MetaQuantOptions(bias=False).freezes_signs(False)
    assert BWNQuantizer().sign_symmetric and not DoReFaQuantizer(1).sign_symmetric
    assert MetaQuantizer(BWNQuantizer()).sign_symmetric
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = strategy_for(small_cnn("dorefa"), meta="multifc")
    assert not s.meta_net_bias and all(m.bias is None for m in s.meta_net.fc)


@pytest.mark.parametrize("bias", [False, None])
def test_the_loops_guard_catches_the_paper_form_on_bwn(bias):
    model, x, y = bwn_classifier()
    train = SimpleNamespace(x=x.numpy(), y=y.numpy())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = finetune(model, train, None, TrainConfig(epochs=3, batch_size=8, lr=0.1, device="cpu"),
                          strategy=MetaQuantStep(MetaQuantOptions(meta="multifc", bias=bias)), progress=False)
    rates = [r["code_flip_rate"] for r in result.history]
    kinds = [w.category for w in caught]
    if bias is False:
        assert rates == [0.0, 0.0, 0.0]
        assert kinds == [MetaQuantWarning, FrozenCodesWarning]  # at setup, then once at the first frozen epoch
        assert len(result.warnings) == 3
        assert all("Likely cause: MultiFC in the paper's bias-free form on a sign-symmetric quantizer (BWN) "
                   "cannot change a weight's sign" in w for w in result.warnings)
        assert caught[1].message.hint.startswith("leave the MultiFC bias unset")
    else:
        assert sum(rates) > 0 and result.warnings == [] and kinds == []
