"""BatchNorm re-estimation after QAT: exact statistics, quantizer ranges and modes untouched."""

from __future__ import annotations

import numpy as np
import torch

from qcompile.data import ArrayDataset
from qcompile.passes.pipeline import quantize_passes, run_passes
from qcompile.passes.trace import trace
from qcompile.plan import QuantSpec, build_plan
from qcompile.quantizers import ActivationQuantizer
from qcompile.train.batchnorm_stats import reestimate_batchnorm


def test_reestimation_computes_exact_statistics_and_touches_nothing_else(tiny_net):
    gm = trace(tiny_net)
    gm, _ = run_passes(gm, quantize_passes(build_plan(gm, QuantSpec(w_bits=2, a_bits=8))))
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.random((96, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 96).astype(np.int64))
    gm.train()
    with torch.no_grad():
        gm(torch.from_numpy(data.x[:32]))  # calibrate activation ranges
    ranges = {n: (q.running_min.clone(), q.running_max.clone()) for n, q in gm.named_modules() if isinstance(q, ActivationQuantizer)}
    seen_inputs = []
    hook = gm.bn1.register_forward_hook(lambda m, args, out: seen_inputs.append(args[0].detach()))
    gm.eval()
    used = reestimate_batchnorm(gm, data, batches=2, batch_size=40)  # 80 of the 96 images
    hook.remove()
    assert used == 80
    # momentum=None: the cumulative average of the per-batch statistics
    mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in seen_inputs]).mean(0)
    var = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in seen_inputs]).mean(0)
    assert len(seen_inputs) == 2
    assert torch.allclose(gm.bn1.running_mean, mean, atol=1e-6)
    assert torch.allclose(gm.bn1.running_var, var, rtol=1e-5)
    assert gm.bn1.momentum == 0.1 and not gm.training and not gm.bn1.training
    for n, q in gm.named_modules():
        if isinstance(q, ActivationQuantizer):
            assert torch.equal(q.running_min, ranges[n][0]) and torch.equal(q.running_max, ranges[n][1])


def test_no_batchnorm_is_a_no_op():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    data = ArrayDataset(np.zeros((4, 1, 2, 2), np.float32), np.zeros(4, np.int64))
    assert reestimate_batchnorm(model, data) == 0
