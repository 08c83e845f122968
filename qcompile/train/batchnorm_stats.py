"""BatchNorm re-estimation after QAT: recompute running statistics with the final weights.

Why: during QAT a BatchNorm's running mean/var are an EMA over many steps whose quantized weights
kept flipping (1-bit codes change sign; every change moves the next layer's input statistics), so
in eval they can describe a network that no longer exists. One no-grad pass over training images
with the final weights, BN in train mode with a cumulative average, fixes that (AIMET calls this
BN re-estimation). Activation quantizers stay in eval mode: their frozen ranges are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from qcompile.modes import preserved_modes
from qcompile.tasks import Task
from qcompile.train.batches import Batches


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics, not updated) inside a model that trains.

    Why: with batch statistics an op's output is normalised per batch, so it cannot be requantised to the next
    grid as the exported (folded) model does. Frozen, BN folds into the op (``passes.attach_batchnorm``) and
    on the ``ort-int8`` target QAT runs the integer kernels' arithmetic (Jacob et al. 2018 freeze BN likewise)."""
    for bn in batchnorms(model):
        bn.eval()


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, dataset: Any, *, batches: int = 64, batch_size: int = 64,
                         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                         task: Task | str | None = None) -> int:
    """Reset and recompute every BatchNorm's running statistics on up to ``batches`` batches of
    ``dataset`` (in order, in ``task``'s batch format). Returns the number of images used (0 when the
    model has no BatchNorm)."""
    bns = batchnorms(model)
    if not bns or batches <= 0:
        return 0
    device = next(model.parameters()).device
    momenta = [bn.momentum for bn in bns]
    seen = 0
    with preserved_modes(model, train=False):
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the pass, not an EMA
            bn.train()
        try:
            for i, (inputs, _) in enumerate(Batches(dataset, batch_size, device, mean, std, task).in_order()):
                if i >= batches:
                    break
                model(inputs)
                seen += len(inputs)
        finally:
            for bn, momentum in zip(bns, momenta):
                bn.momentum = momentum
    return seen


def statistics_unchanged(model: nn.Module, reference: nn.Module) -> bool:
    """True when ``model`` has BatchNorm running statistics and every one equals ``reference``'s under the
    same name: nothing (calibration, training, re-estimation) has recomputed them since ``reference``."""
    state, ref = model.state_dict(), reference.state_dict()
    keys = [k for k in state if k.endswith((".running_mean", ".running_var")) and k in ref]
    return bool(keys) and all(torch.equal(state[k].cpu(), ref[k].cpu()) for k in keys)
