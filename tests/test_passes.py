"""Each graph pass alone on a small graph, plus the plan that drives them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qcompile.errors import ConfigError, ExportError
from qcompile.passes.attach_batchnorm import AttachBatchNorm, AttachedBatchNorm
from qcompile.passes.base import reports
from qcompile.passes.fold_batchnorm import FoldBatchNorm
from qcompile.passes.insert_activation_quantizers import InsertActivationQuantizers
from qcompile.passes.insert_weight_quantizers import InsertWeightQuantizers
from qcompile.passes.nonnegative import is_nonnegative
from qcompile.passes.pipeline import export_passes, quantize_passes, run_passes
from qcompile.passes.sites import float_ops, propagate_shapes
from qcompile.passes.strip_for_export import StripForExport
from qcompile.passes.trace import trace
from qcompile.plan import QuantSpec, build_plan
from qcompile.quantized_ops import QuantConv, QuantLinear
from qcompile.quantizers import ActivationQuantizer, DoReFaQuantizer

X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def quantized(net, **spec):
    gm = trace(net)
    plan = build_plan(gm, QuantSpec(**spec))
    gm, _ = run_passes(gm, quantize_passes(plan))
    gm.train()
    with torch.no_grad():
        for _ in range(2):
            gm(X)
    return gm.eval()


def test_plan_policies_and_overrides(tiny_net):
    gm = trace(tiny_net)
    plan = build_plan(gm, QuantSpec(w_bits=2, a_bits=4, first_layer="8bit", last_layer="float"))
    assert [(s.name, s.w_bits, s.a_bits) for s in plan.sites] == [("conv1", 8, 8), ("conv2", 2, 4), ("fc", None, None)]
    plan = build_plan(gm, QuantSpec(w_bits=4, overrides={"conv*": 2, "fc": 0}))
    assert [(s.name, s.w_bits) for s in plan.sites] == [("conv1", 2), ("conv2", 2), ("fc", None)]
    with pytest.raises(ConfigError, match="match no layer"):
        build_plan(gm, QuantSpec(overrides={"nope": 2}))
    with pytest.raises(ConfigError, match="w-bits"):
        build_plan(gm, QuantSpec(w_bits=9))
    assert plan.sites[0].per_channel and not build_plan(gm, QuantSpec(w_bits=1, quantizer="bwn")).sites[0].per_channel


def test_insert_weight_quantizers_alone(tiny_net):
    gm = trace(tiny_net)
    keys = set(gm.state_dict())
    plan = build_plan(gm, QuantSpec(w_bits=4, a_bits=None, last_layer="float"))
    p = InsertWeightQuantizers(plan)
    res = p(gm)
    assert res.modified
    assert isinstance(gm.conv1, QuantConv) and isinstance(gm.conv2, QuantConv) and type(gm.fc) is nn.Linear
    assert gm.conv1.input_quantizer is None
    assert {r["site"] for r in p.report["quantized"]} == {"conv1", "conv2"}
    assert p.report["kept_float"] == [{"site": "fc", "reason": "last layer kept in float by policy"}]
    # parameters keep their names: float checkpoints still load
    assert {k for k in gm.state_dict() if "quantizer" not in k and "channel_scale" not in k} == keys
    # idempotent
    assert not InsertWeightQuantizers(plan)(gm).modified
    assert reports(gm)[-1]["pass"] == "InsertWeightQuantizers"


def test_insert_activation_quantizers_signedness(tiny_net):
    gm = trace(tiny_net)
    plan = build_plan(gm, QuantSpec(w_bits=4, a_bits=4))
    InsertWeightQuantizers(plan)(gm)
    p = InsertActivationQuantizers(plan)
    assert p(gm).modified
    # the model input can be negative → signed; after ReLU / pooling of ReLU → unsigned
    assert gm.conv1.input_quantizer.signed
    assert not gm.conv2.input_quantizer.signed
    assert not gm.fc.input_quantizer.signed
    assert all(q["bits"] == 4 for q in p.report["activation_quantizers"])


def test_insert_activation_quantizers_takes_them_from_the_factory(tiny_net):
    """A method's factory is called per planned site with the site and its signedness."""
    gm = trace(tiny_net)
    plan = build_plan(gm, QuantSpec(w_bits=4, a_bits=4))
    InsertWeightQuantizers(plan)(gm)
    calls = []

    def factory(site, signed):
        calls.append((site.name, site.a_bits, signed))
        return ActivationQuantizer(3, signed)

    InsertActivationQuantizers(plan, factory)(gm)
    assert calls == [("conv1", 4, True), ("conv2", 4, False), ("fc", 4, False)]
    assert {gm.conv1.input_quantizer.bits, gm.conv2.input_quantizer.bits, gm.fc.input_quantizer.bits} == {3}


def test_nonnegative_analysis():
    class Net(nn.Module):
        def forward(self, x):
            a = F.relu(x)
            b = F.max_pool2d(a, 2).flatten(1)
            c = x.clamp(min=0.0)
            d = a - 1
            return b, c, d, torch.cat([a, x.sigmoid()], 1)

    gm = trace(Net())
    nodes = {n.name: n for n in gm.graph.nodes}
    assert is_nonnegative(gm, nodes["flatten"])
    assert is_nonnegative(gm, nodes["clamp"])
    assert not is_nonnegative(gm, nodes["sub"])
    assert is_nonnegative(gm, nodes["cat"])
    assert not is_nonnegative(gm, nodes["x"])


def test_fold_batchnorm_keeps_codes_and_outputs(tiny_net):
    gm = quantized(tiny_net, w_bits=4, a_bits=8)
    codes_before = {n: m.weight_quantizer.codes(m.weight) for n, m in gm.named_modules() if isinstance(m, (QuantConv, QuantLinear))}
    ref = gm(X)
    p = FoldBatchNorm()
    assert p(gm).modified
    assert [f["bn"] for f in p.report["folded"]] == ["bn1", "bn2"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    for name, m in gm.named_modules():
        if isinstance(m, (QuantConv, QuantLinear)):
            after = m.weight_quantizer.codes(m.weight)
            assert torch.equal(after.codes, codes_before[name].codes)  # codes untouched
            assert torch.equal(after.scale, codes_before[name].scale)
    assert not torch.equal(gm.conv1.channel_scale, torch.ones(8))  # BN went into the per-channel scale
    assert torch.allclose(gm(X), ref, atol=1e-5)


def test_fold_batchnorm_on_float_conv(tiny_net):
    gm = trace(copy.deepcopy(tiny_net))
    ref = gm(X)
    assert FoldBatchNorm()(gm).modified
    assert gm.conv1.bias is not None
    assert torch.allclose(gm(X), ref, atol=1e-5)


def test_fold_batchnorm_skips_shared_outputs():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    gm = trace(Net().eval())
    p = FoldBatchNorm()
    assert not p(gm).modified
    assert p.report["skipped"][0]["reason"] == "the conv output has other users"


def test_strip_for_export(tiny_net):
    class WithDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.drop, self.fc = copy.deepcopy(tiny_net), nn.Dropout(0.5), nn.Linear(10, 3)

        def forward(self, x):
            return self.fc(F.dropout(self.drop(self.body(x)), 0.2))

    gm = quantized(WithDropout(), w_bits=4, a_bits=8)
    wrapper_inner = DoReFaQuantizer(1)

    class Wrapper(DoReFaQuantizer):  # a training-only wrapper, like MetaQuant's
        def export_quantizer(self):
            return wrapper_inner

    gm.fc.weight_quantizer = Wrapper(1)
    p = StripForExport()
    p(gm)
    assert gm.fc.weight_quantizer is wrapper_inner
    assert len(p.report["removed_dropout"]) == 2
    assert not gm.training and all(bool(m.input_quantizer.frozen) for m in gm.modules() if isinstance(m, (QuantConv, QuantLinear)))
    assert "dropout" not in gm.code


def test_strip_refuses_uncalibrated(tiny_net):
    gm = trace(tiny_net)
    gm, _ = run_passes(gm, quantize_passes(build_plan(gm, QuantSpec(w_bits=4, a_bits=8))))
    with pytest.raises(ExportError, match="never calibrated"):
        StripForExport()(gm)


def test_pipeline_reports_and_shapes(tiny_net):
    gm = quantized(tiny_net, w_bits=2, a_bits=8)
    ref = gm(X)
    gm, reps = run_passes(gm, export_passes())
    assert [r["pass"] for r in reps] == ["StripForExport", "FoldBatchNorm"]
    assert torch.allclose(gm(X), ref, atol=1e-5)
    sites = propagate_shapes(trace(tiny_net), (torch.randn(2, 1, 8, 8),))
    assert [(s.name, s.output_shape, s.macs) for s in sites] == [
        ("conv1", (2, 8, 8, 8), 8 * 64 * 9), ("conv2", (2, 16, 4, 4), 16 * 16 * 72), ("fc", (2, 10), 160)]
    reasons = {f.name: f.reason for f in float_ops(trace(tiny_net))}
    assert "folded" in reasons["bn1"] and "pooling" in reasons["pool"]


def test_attach_batchnorm_makes_folding_bitwise_exact(tiny_net):
    gm = trace(tiny_net)
    plan = build_plan(gm, QuantSpec(w_bits=4, a_bits=4))
    gm, _ = run_passes(gm, quantize_passes(plan)[:2])  # insert quantizers only
    keys = list(gm.state_dict())
    p = AttachBatchNorm()
    assert p(gm).modified
    assert [a["op"] for a in p.report["attached"]] == ["conv1", "conv2"]
    assert isinstance(gm.bn1, AttachedBatchNorm) and gm.conv1.attached_bn is gm.bn1
    assert list(gm.state_dict()) == keys  # same checkpoint keys
    gm.train()
    before = gm.bn1.running_mean.clone()
    gm(X)  # training: an ordinary BN with batch statistics
    assert not torch.equal(gm.bn1.running_mean, before)
    gm.eval()
    x = torch.randn(2048, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = gm(x)
        folded, _ = run_passes(copy.deepcopy(gm), export_passes())
        assert torch.equal(folded(x), ref)  # not just close: identical
    assert folded.conv1.attached_bn is None
    assert not any(isinstance(m, AttachedBatchNorm) for m in folded.modules())


def test_exact_global_pooling_rewrites_means_and_keeps_values(tiny_net):
    from qcompile.passes.exact_pooling import ExactGlobalPooling, Float64GlobalPool

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = copy.deepcopy(tiny_net)
            self.avg = nn.AvgPool2d(2)

        def forward(self, x):
            return self.body(x) + self.avg(x).mean((2, 3)).sum(1, keepdim=True)

    gm = trace(Net().eval())
    ref = gm(X)
    p = ExactGlobalPooling()
    assert p(gm).modified
    assert isinstance(gm.body.pool, Float64GlobalPool)
    assert p.report["left"] == [{"node": "avg", "reason": "windowed average pooling stays float32"}]
    assert "float64_mean" in gm.code
    assert torch.allclose(gm(X), ref, atol=1e-6) and gm(X).dtype == torch.float32
    # the pipeline adds it only when activations are quantized, and signedness still sees through it
    q = quantized(tiny_net, w_bits=4, a_bits=8)
    assert isinstance(q.pool, Float64GlobalPool) and not q.fc.input_quantizer.signed
    assert not isinstance(quantized(tiny_net, w_bits=4, a_bits=None).pool, Float64GlobalPool)
