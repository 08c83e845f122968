"""The training objective: the task's loss, optionally blended with distillation from a float teacher.

An objective is a callable ``objective(outputs, targets, inputs) -> loss``. It receives the
inputs so that distillation can run the teacher on the same batch; a StepStrategy never needs
to know whether a teacher exists — it just calls the objective on its own forward's outputs.

With a teacher and weight α, the objective is

    loss = (1 − α)·task.loss(student, y) + α·task.distillation_loss(student, teacher, T)

where both terms belong to the task (for classification: cross-entropy and T²-scaled KL,
:mod:`qcompile.tasks.classification`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from qcompile.tasks import Task, get_task
from qcompile.tasks.classification import cross_entropy, kd_loss

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["Distillation", "LabelsChecked", "Objective", "cross_entropy", "kd_loss", "make_objective"]


class Distillation:
    """The task's loss blended with its distillation loss against a frozen teacher (eval mode, no grad)."""

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float, task: Task | str | None = None):
        self.teacher = teacher.eval()
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.task = get_task(task)
        self.task.check_distillation(self.alpha)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_outputs = self.teacher(inputs)
        hard = self.task.loss(outputs, targets, inputs)
        soft = self.task.distillation_loss(outputs, teacher_outputs, self.temperature)
        return (1.0 - self.alpha) * hard + self.alpha * soft


def make_objective(
    teacher: nn.Module | None = None, kd_alpha: float = 0.0, kd_temperature: float = 4.0,
    task: Task | str | None = None,
) -> Objective:
    """The task's loss when there is no teacher or ``kd_alpha == 0``; otherwise :class:`Distillation`.

    ``task`` defaults to classification. The teacher is put in eval mode here (once); the caller
    owns its device placement.
    """
    task = get_task(task)
    if teacher is None or kd_alpha == 0:
        return task.loss
    return Distillation(teacher, kd_alpha, kd_temperature, task)


class LabelsChecked:
    """``objective``, which on its first call has the task check every label of the run (``labels``:
    split name → labels) against that forward's outputs — before any loss, backward or update, so a
    label the model has no output for stops the run at its first batch, not at the batch that holds it."""

    def __init__(self, objective: Objective, task: Task, labels: Mapping[str, np.ndarray]):
        self.objective, self.task, self.labels = objective, task, dict(labels)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self.labels:
            for split, y in self.labels.items():
                self.task.check_targets(y, outputs, split)
            self.labels = {}
        return self.objective(outputs, targets, inputs)
