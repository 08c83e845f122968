"""Classification: int64 labels (or soft labels), cross-entropy, Hinton distillation, top-1 accuracy.

The default task, and exactly what the loop did before tasks existed: history keeps the names
``train_loss``/``train_acc``/``test_acc``/``test_loss`` and every number is computed the same way.

Distillation (Hinton et al., 2015), with temperature T and weight α (blended by
:func:`qcompile.train.objective.make_objective`):

    loss = (1 − α)·CE(student, y) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T))

T² keeps the soft-target gradients on the same scale as the hard-target ones when T changes.

Targets are class indices ``(N,)``, or class probabilities ``(N, classes)`` (soft labels, e.g. a
synthetic pool's): cross-entropy is then −Σ_c y_c·log p_c, and accuracy counts the arg-max of the row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from qcompile.errors import ConfigError, DataError
from qcompile.tasks.base import Task


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


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices: the targets themselves, or the arg-max of soft-label rows."""
    return targets.argmax(dim=1) if targets.dim() == 2 else targets


def batch_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the target (a soft label's arg-max)."""
    return (outputs.detach().argmax(dim=1) == hard_targets(targets)).float().mean().item()


class Classification(Task):
    """Logits ``(N, classes)`` against int64 labels ``(N,)`` or probability rows ``(N, classes)``; the
    headline metric is top-1 accuracy."""

    name = "classification"
    metrics = ("acc",)
    headline = "acc"
    loss = staticmethod(cross_entropy)
    distillation_loss = staticmethod(kd_loss)

    def targets(self, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        del x
        y = np.asarray(y)
        return torch.from_numpy(np.asarray(y, dtype=np.float32 if y.ndim == 2 else np.int64))

    def check_targets(self, y: np.ndarray, outputs: Any, split: str) -> None:
        """Labels are integer class indices in ``[0, classes)``, ``classes`` being the outputs' width."""
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
            got = f"shape {tuple(outputs.shape)}" if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise ConfigError(f"a classifier must output (batch, classes) scores, but the model outputs {got}",
                              hint="end the model with its class scores (e.g. nn.Flatten() then nn.Linear(features, "
                                   "classes)), or train it for another task")
        classes = outputs.shape[1]
        y = np.asarray(y)
        if y.ndim == 2:
            _check_soft(y, classes, split)
            return
        if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.array_equal(y, np.round(y))):
            raise DataError(f"the {split} labels are {y.dtype} values, not class indices",
                            hint=f"give integer labels 0..{classes - 1}, one per sample")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise DataError(
                f"the {split} labels go from {low} to {high}, but the model outputs {classes} class scores "
                f"(labels 0..{classes - 1})",
                hint=(f"give the model's last layer {high + 1} outputs (e.g. nn.Linear(features, {high + 1})), "
                      f"or pass data whose labels are 0..{classes - 1}") if low >= 0 else
                     f"labels are class indices: 0..{classes - 1}, never negative")

    def batch_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {"acc": batch_accuracy(outputs, targets)}

    def evaluation_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """``acc``: the number of correct top-1 predictions; ``loss``: summed cross-entropy."""
        return {"acc": int((outputs.argmax(dim=1) == hard_targets(targets)).sum().item()),
                "loss": F.cross_entropy(outputs, targets, reduction="sum").item()}


def _check_soft(y: np.ndarray, classes: int, split: str) -> None:
    """Soft labels: one probability row per sample, one column per class score."""
    if y.shape[1] != classes:
        raise DataError(f"the {split} soft labels have {y.shape[1]} columns, but the model outputs {classes} class "
                        "scores", hint=f"give one probability per class ({classes} columns), or class indices")
    if not np.isfinite(y).all() or (y < 0).any() or not np.allclose(y.sum(axis=1), 1.0, atol=1e-4):
        raise DataError(f"the {split} soft labels are not probability rows (non-negative, summing to 1)",
                        hint="normalise each row to sum to 1, or give class indices")
