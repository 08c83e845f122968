"""The training step of the selector and the multi-width weights together, on a pool (or real data).

Per batch: with soft labels (a pool), mixup of easy images (one-hot rows; each, with probability ``p``, is blended with a
random easy partner of the batch, x = λ·x_i + (1−λ)·x_j and likewise the targets, λ ~ U(0, 1) = Beta(1, 1)), then
the forward (the selector draws a hard Gumbel-softmax choice per image and layer), the objective (the
task's loss — soft-label cross-entropy on a pool — blended with distillation from the float model by
``--kd-alpha``) plus the BitOPs regulariser (:mod:`.regulariser`), one backward and one optimizer step
over all parameters, selector included. BatchNorm statistics stay frozen on a pool (as
:class:`~.step.FrozenBatchNormStep`). Mean BitOPs per image, relative to the target, are recorded per step.
"""

from __future__ import annotations

import torch
from torch import nn

from qcompile.methods.dynadfq.regulariser import bit_loss, dynamic_parts, image_bitops, target_bitops
from qcompile.train.batchnorm_stats import batchnorms
from qcompile.train.objective import Objective
from qcompile.train.config import TrainConfig
from qcompile.train.strategy import StandardStep, StepOutput, build_scheduler


def mixup_easy(inputs: torch.Tensor, soft: torch.Tensor, p: float = 0.5):
    """(inputs, soft targets) with the easy rows (one-hot soft labels) mixed up as described above."""
    easy = torch.nonzero(soft.max(dim=1).values >= 1.0 - 1e-6).flatten()
    if len(easy) < 2 or p <= 0:
        return inputs, soft
    chosen = easy[torch.rand(len(easy), device=inputs.device) < p]
    partners = easy[torch.randint(len(easy), (len(chosen),), device=inputs.device)]
    lam = torch.rand(len(chosen), device=inputs.device)
    inputs, soft = inputs.clone(), soft.clone()
    view = lam.view(-1, *([1] * (inputs.dim() - 1)))
    inputs[chosen] = view * inputs[chosen] + (1 - view) * inputs[partners]
    soft[chosen] = lam[:, None] * soft[chosen] + (1 - lam[:, None]) * soft[partners]
    return inputs, soft


class DynamicStep(StandardStep):
    """``selector_lr``: the selector's own learning rate (a fresh branch, while the quantized weights only
    fine-tune at ``--lr``; CADyQ likewise gives its selectors their own optimizer)."""

    def __init__(self, target_width: float, bit_weight: float, freeze_batchnorm: bool, mixup: float = 0.5,
                 selector_lr: float = 1e-2):
        super().__init__()
        self.target_width, self.bit_weight = float(target_width), float(bit_weight)
        self.freeze_batchnorm, self.mixup, self.selector_lr = freeze_batchnorm, float(mixup), float(selector_lr)
        self._extra: dict[str, float] = {}

    def setup(self, model: nn.Module, config: TrainConfig) -> None:
        super().setup(model, config)
        selector, _ = dynamic_parts(model)
        own = {id(p) for p in selector.parameters()}
        group = self.optimizer.param_groups[0]
        group["params"] = [p for p in group["params"] if id(p) not in own]
        self.optimizer.add_param_group({"params": list(selector.parameters()), "lr": self.selector_lr})
        if self.scheduler is not None:  # the scheduler follows both groups
            self.scheduler = build_scheduler(self.optimizer, config)

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, objective: Objective) -> StepOutput:
        if self.freeze_batchnorm:
            for bn in batchnorms(model):
                bn.eval()
        optimizer = self._optimizer()
        optimizer.zero_grad(set_to_none=True)
        if targets.dim() == 2:  # soft labels (a pool): mix up easy images
            inputs, targets = mixup_easy(inputs, targets, self.mixup)
        outputs = model(inputs)
        task_loss = objective(outputs, targets, inputs)
        bitops = image_bitops(model)
        target = target_bitops(model, self.target_width)
        loss = task_loss + bit_loss(bitops, target, self.bit_weight)
        loss.backward()
        optimizer.step()
        self._extra = {"bitops_ratio": float(bitops.detach().mean()) / target, "task_loss": float(task_loss.detach())}
        return StepOutput(loss.item(), outputs)

    @property
    def extra_metrics(self) -> dict[str, float]:
        return dict(self._extra)
