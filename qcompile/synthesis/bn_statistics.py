"""BatchNorm-statistics matching: the synthetic batch's statistics at every BN *input* vs the running ones.

    L_BNS = (1/L) Σ_l [ MSE(mean_batch,l(x), μ_l) + MSE(var_batch,l(x), σ²_l) ]

with the batch statistics over every axis but the channel axis (N, H, W), the biased variance, and the
MSE averaged over channels (the form of the IntraQ/HAST synthesis code; ZeroQ's differs only by scale).
The model runs in eval mode, so its BN layers keep normalising with their running statistics and are
never updated; forward pre-hooks on the BN modules found in the graph read their inputs. Hooks are
removed on exit, so a model is never left instrumented.
"""

from __future__ import annotations

import torch
from torch import nn


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` (N, C, ...) over every axis but 1."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims)
    var = (x - mean.reshape(1, -1, *[1] * (x.dim() - 2))).pow(2).mean(dim=dims)
    return mean, var


class BNStatisticsLoss:
    """A context manager: while active, each forward records one term per BatchNorm; :meth:`loss` averages them.

        with BNStatisticsLoss(parts.batchnorms) as bns:
            logits = model(x)
            loss = bns.loss()
    """

    def __init__(self, batchnorms: tuple[tuple[str, nn.modules.batchnorm._BatchNorm], ...] | list):
        self.batchnorms = list(batchnorms)
        self._terms: list[torch.Tensor] = []
        self._per_layer: dict[str, float] = {}
        self._handles: list = []

    def _hook(self, name: str, bn: nn.modules.batchnorm._BatchNorm):
        def record(module: nn.Module, args: tuple) -> None:
            mean, var = batch_moments(args[0])
            term = (torch.mean((mean - bn.running_mean) ** 2) + torch.mean((var - bn.running_var) ** 2))
            self._terms.append(term)
            self._per_layer[name] = float(term.detach())
        return record

    def __enter__(self) -> BNStatisticsLoss:
        self._handles = [bn.register_forward_pre_hook(self._hook(name, bn)) for name, bn in self.batchnorms]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def loss(self) -> torch.Tensor:
        """The mean of the terms recorded since the last call (one per BN call), and reset."""
        if not self._terms:
            raise RuntimeError("no BatchNorm input was seen: run the model inside the context first")
        terms, self._terms = self._terms, []
        return torch.stack(terms).mean()

    @property
    def per_layer(self) -> dict[str, float]:
        """The last forward's term per BN layer: which layers the images still fail to match."""
        return dict(self._per_layer)
