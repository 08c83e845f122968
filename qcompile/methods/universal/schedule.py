"""The α schedule of soft rounding, and the training step that applies it (uq.md §1.4).

α moves from ``alpha_start`` to ``alpha_end`` over the training steps of one ``finetune`` call:
geometric (α₀·(α₁/α₀)^p, the default: equal ratios per step, as the §7 experiment's 1 → 30), linear,
or constant (α₀). p = step / (total − 1) ∈ [0, 1], so the last step trains at exactly ``alpha_end``.
The step counter is part of the strategy's state, so a resumed run continues the same schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qcompile.methods.universal.options import UniversalOptions
from qcompile.methods.universal.quantizers import universal_nodes
from qcompile.train.config import TrainConfig
from qcompile.train.objective import Objective
from qcompile.train.strategy import StandardStep, StepOutput


def alpha_at(settings: UniversalOptions, progress: float) -> float:
    """α at ``progress`` ∈ [0, 1] of training (clipped to that range)."""
    p = min(max(float(progress), 0.0), 1.0)
    a0, a1 = settings.alpha_start, settings.alpha_end
    if settings.alpha_schedule == "geometric":
        return a0 * (a1 / a0) ** p
    if settings.alpha_schedule == "linear":
        return a0 + (a1 - a0) * p
    return a0


class AlphaScheduleStep(StandardStep):
    """The standard step, with every UQ node's α set from the schedule before each forward."""

    def __init__(self, settings: UniversalOptions):
        super().__init__()
        self.settings = settings
        self.steps_done = 0
        self.total_steps = 1
        self._epochs = 1

    def setup(self, model: nn.Module, config: TrainConfig) -> None:
        super().setup(model, config)
        self._epochs = config.epochs

    def plan_steps(self, steps_per_epoch: int) -> None:
        self.total_steps = max(1, steps_per_epoch * self._epochs)

    @property
    def alpha(self) -> float:
        return alpha_at(self.settings, self.steps_done / max(1, self.total_steps - 1))

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
             objective: Objective) -> StepOutput:
        alpha = self.alpha
        for node in universal_nodes(model):
            node.set_alpha(alpha)
        out = super().step(model, inputs, targets, objective)
        self.steps_done += 1
        return out

    @property
    def extra_metrics(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps_done = int(state.get("steps_done", 0))
