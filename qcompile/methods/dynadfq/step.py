"""Training on a synthetic pool with the float model's BatchNorm statistics frozen.

The pool's images were optimised so that their batch statistics at every BatchNorm input match the
float model's running statistics. Training in the usual train mode would normalise with the pool's
batch statistics and pull the running ones towards them; re-estimating them after training would do
the same at once. Both move the statistics away from what real images produce (in first trials with the
MNIST CNN at W4A4, either cost a large share of the real-data accuracy). So the
BatchNorms run in eval mode (running statistics, not updated) at every step; their affine weights still
train. Everything else is :class:`~qcompile.train.strategy.StandardStep`.
"""

from __future__ import annotations

import torch
from torch import nn

from qcompile.train.batchnorm_stats import batchnorms
from qcompile.train.objective import Objective
from qcompile.train.strategy import StandardStep, StepOutput


class FrozenBatchNormStep(StandardStep):
    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, objective: Objective) -> StepOutput:
        for bn in batchnorms(model):
            bn.eval()
        return super().step(model, inputs, targets, objective)
