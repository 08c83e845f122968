"""Finetuning (QAT): a loop that owns data, devices, checkpoints and progress, a
:class:`StepStrategy` seam through which quantization methods own the training step, and a
:class:`~qcompile.tasks.Task` seam that owns what outputs mean (loss, metrics, evaluation)."""

from __future__ import annotations

from qcompile.train.checkpoint import CHECKPOINT_NAME, checkpoint_path, load_checkpoint, save_checkpoint
from qcompile.train.config import TrainConfig, resolve_device
from qcompile.train.batches import Batches
from qcompile.train.loop import TrainResult, TrainState, epoch_permutation, evaluate, finetune
from qcompile.train.objective import Distillation, cross_entropy, kd_loss, make_objective
from qcompile.train.strategy import StandardStep, StepOutput, StepStrategy, build_optimizer, build_scheduler

__all__ = [
    "CHECKPOINT_NAME",
    "Batches",
    "Distillation",
    "StandardStep",
    "StepOutput",
    "StepStrategy",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "build_optimizer",
    "build_scheduler",
    "checkpoint_path",
    "cross_entropy",
    "epoch_permutation",
    "evaluate",
    "finetune",
    "kd_loss",
    "load_checkpoint",
    "make_objective",
    "resolve_device",
    "save_checkpoint",
]
