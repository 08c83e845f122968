"""``sync_bn``: under several ranks, BatchNorm normalises a training batch with the global batch's statistics.

Why not ``torch.nn.SyncBatchNorm``: it runs on GPUs only (gloo ranks on CPU are refused), and converting
would replace the BatchNorm modules the quantized ops reference (:mod:`qcompile.passes.attach_batchnorm`)
by plain ones, losing the eval-mode pass-through that makes the trained model equal its export. Instead
each BatchNorm's class is swapped in place for a subclass that overrides the training-mode forward only:
parameters, buffers, state-dict keys and attached references stay as they are, eval is untouched, and
the original classes come back when training ends.

The statistics are all-reduced as (sum, sum of squares, count) in float64; the backward all-reduces the
gradient of each rank's loss weighted by its share of the global batch (the share the gradient averager
applies), so the parameters' gradients are the full global batch's even when a batch splits unevenly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from qcompile import distributed


class _WeightedAllReduce(torch.autograd.Function):
    """Forward: the sum over ranks. Backward: Σ_r share_r · grad_r / share_local, which the gradient
    averager's later × share_local turns into the global batch's gradient."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, share: float) -> torch.Tensor:
        ctx.share = share
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad * ctx.share
        dist.all_reduce(grad)
        return grad / ctx.share, None


class _Synced:
    """Mixed in before the BatchNorm's own class: the training forward on global statistics."""

    averager: distributed.GradientAverager

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not distributed.active():
            return super().forward(x)
        return self._synced_forward(x)

    def _synced_forward(self, x: torch.Tensor) -> torch.Tensor:
        c, dims = x.shape[1], [0, *range(2, x.dim())]
        x64 = x.double()
        count = torch.full((1,), x.numel() / c, dtype=torch.float64, device=x.device)
        stats = _WeightedAllReduce.apply(torch.cat([x64.sum(dims), (x64 * x64).sum(dims), count]), self.averager.weight)
        n = stats[-1]
        mean, var = stats[:c] / n, stats[c:2 * c] / n - (stats[:c] / n) ** 2
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), factor)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = ((x64 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


_SYNCED: dict[type, type] = {}


def _synced_class(cls: type) -> type:
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"Synced{cls.__name__}", (_Synced, cls), {"__module__": __name__})
    return _SYNCED[cls]


@contextlib.contextmanager
def synchronised_batchnorm(model: nn.Module, averager: distributed.GradientAverager | None) -> Iterator[int]:
    """Inside: every BatchNorm of ``model`` trains on global-batch statistics (yields how many); a no-op
    without an averager (one process)."""
    if averager is None:
        yield 0
        return
    swapped = [(m, type(m)) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and not isinstance(m, _Synced)]
    for module, cls in swapped:
        module.__class__ = _synced_class(cls)
        object.__setattr__(module, "averager", averager)
    try:
        yield len(swapped)
    finally:
        for module, cls in swapped:
            module.__class__ = cls
            object.__delattr__(module, "averager")
