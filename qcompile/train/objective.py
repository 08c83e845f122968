"""The training objective: cross-entropy, optionally blended with knowledge distillation.

An objective is a callable ``objective(outputs, targets, inputs) -> loss``. It receives the
inputs so that distillation can run the teacher on the same batch; a StepStrategy never needs
to know whether a teacher exists — it just calls the objective on its own forward's outputs.

Distillation (Hinton et al., 2015), with temperature T and weight α:

    loss = (1 − α)·CE(student, y) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))

T² keeps the soft-target gradients on the same scale as the hard-target ones when T changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Plain mean cross-entropy; ``inputs`` is unused (part of the objective signature)."""
    del inputs
    return F.cross_entropy(outputs, targets)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    t = float(temperature)
    log_p_student = F.log_softmax(student / t, dim=1)
    log_p_teacher = F.log_softmax(teacher / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


class Distillation:
    """Blend of CE and KD against a frozen teacher, run in eval mode without gradients."""

    def __init__(self, teacher: nn.Module, alpha: float, temperature: float):
        self.teacher = teacher.eval()
        self.alpha = float(alpha)
        self.temperature = float(temperature)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_outputs = self.teacher(inputs)
        ce = F.cross_entropy(outputs, targets)
        return (1.0 - self.alpha) * ce + self.alpha * kd_loss(outputs, teacher_outputs, self.temperature)


def make_objective(
    teacher: nn.Module | None = None, kd_alpha: float = 0.0, kd_temperature: float = 4.0
) -> Objective:
    """CE when there is no teacher or ``kd_alpha == 0``; otherwise :class:`Distillation`.

    The teacher is put in eval mode here (once); the caller owns its device placement.
    """
    if teacher is None or kd_alpha == 0:
        return cross_entropy
    return Distillation(teacher, kd_alpha, kd_temperature)
