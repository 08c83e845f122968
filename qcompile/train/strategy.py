"""StepStrategy: the seam through which a quantization method owns the training step.

The loop (``qcompile.train.loop``) owns everything around a step — data order, devices,
evaluation, checkpoints, callbacks, progress. A strategy owns the step itself: what runs before
the forward, how gradients are formed and how parameters are updated. Methods whose update is
not "backward then optimizer.step" (e.g. one that runs a meta-network and overwrites gradients)
subclass :class:`StepStrategy`; everything else uses :class:`StandardStep`.

Contract for implementers:
1. ``setup(model, config)`` is called once, after the model is on its device and before any
   step or ``load_state_dict``; build optimizers, schedulers and auxiliary networks here.
2. ``step`` runs one full iteration on a batch already normalised and on the device, with the
   model in train mode. It must call ``objective(outputs, targets, inputs)`` for the loss so
   that distillation works, and return a :class:`StepOutput`: the loss as a float and the
   outputs of the forward it came from. The loop hands those outputs to the task for the batch's
   metrics (accuracy for classification), so a strategy never knows what the outputs mean.
   ``plan_steps(steps_per_epoch)`` follows, once per ``finetune`` call (a resume too), for schedules
   that move with the step rather than the epoch (e.g. a soft-rounding sharpness annealed per step).
3. ``epoch_end(epoch)`` is called after each completed epoch (0-based), after evaluation.
4. ``state_dict()`` returns everything needed for an exact resume, made only of tensors,
   dicts, lists, tuples, numbers, strings and None (checkpoints load with ``weights_only=True``).
5. ``frozen_codes_cause()`` may name why this strategy's updates cannot change weight codes; the
   loop quotes it when its frozen-codes guard fires (:mod:`qcompile.train.code_flips`).
6. ``data_parallel(model)`` is called under several ranks, after ``setup``: return the
   :class:`~qcompile.distributed.GradientAverager` that makes this strategy's update the global batch's
   (the loop sets its per-step weight). The default refuses: an update that is not one optimizer over
   plain gradients must say what has to be shared across ranks before it runs on several.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qcompile import distributed
from qcompile.errors import ConfigError
from qcompile.train.config import TrainConfig
from qcompile.train.objective import Objective


@dataclass(frozen=True)
class StepOutput:
    """What one step did: its mean loss, and the model outputs that loss was computed on."""

    loss: float
    outputs: Any  # a tensor, or whatever the model returns; read by the task under no_grad


class StepStrategy(abc.ABC):
    """How one training iteration is performed. See the module docstring for the contract."""

    @abc.abstractmethod
    def setup(self, model: nn.Module, config: TrainConfig) -> None:
        """Build optimizer/scheduler (and any method state) for ``model``."""

    @abc.abstractmethod
    def step(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, objective: Objective
    ) -> StepOutput:
        """Forward, loss, backward, update. Returns the loss and the outputs it was computed on."""

    def plan_steps(self, steps_per_epoch: int) -> None:
        """The number of steps in one epoch, known once the data is batched. Default: nothing."""

    def epoch_end(self, epoch: int) -> None:
        """Advance per-epoch schedules. Default: nothing."""

    @property
    @abc.abstractmethod
    def lr(self) -> float:
        """Current learning rate (shown in progress and recorded in history)."""

    @property
    def extra_metrics(self) -> dict[str, float]:
        """Method-specific values to display and record per step (e.g. a meta-loss). Default: none."""
        return {}

    def frozen_codes_cause(self) -> tuple[str, str] | None:
        """(likely cause, how to fix) when this configuration is known to stop weight codes from
        changing, or None (the loop's frozen-codes guard then names the generic one)."""
        return None

    def data_parallel(self, model: nn.Module) -> distributed.GradientAverager:
        """The gradient averager for several ranks (contract item 6). Default: refused."""
        distributed.refuse(f"the {type(self).__name__} training step")
        raise AssertionError("unreachable: refuse raises under several ranks")

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume (weights_only-loadable)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; called after :meth:`setup`."""


def build_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (weight decay) over the trainable ``params``."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ConfigError(
            "the model has no trainable parameters to finetune",
            hint="check that the quantized model's parameters have requires_grad=True",
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            trainable, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer {config.optimizer!r}", hint="accepted optimizers: sgd, adam")


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-epoch schedule: cosine over ``epochs``, step decay, or None for a constant lr."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return None


class StandardStep(StepStrategy):
    """zero_grad → forward → objective → backward → optimizer.step; scheduler once per epoch."""

    def __init__(self) -> None:
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def setup(self, model: nn.Module, config: TrainConfig) -> None:
        self.optimizer = build_optimizer(model.parameters(), config)
        self.scheduler = build_scheduler(self.optimizer, config)

    def step(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, objective: Objective
    ) -> StepOutput:
        optimizer = self._optimizer()
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = objective(outputs, targets, inputs)
        loss.backward()
        optimizer.step()
        return StepOutput(loss.item(), outputs)

    def epoch_end(self, epoch: int) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self._optimizer().param_groups[0]["lr"])

    def data_parallel(self, model: nn.Module) -> distributed.GradientAverager:
        """Every gradient the optimizer steps with (and BatchNorm statistics) averaged before its step."""
        return distributed.GradientAverager(model, self._optimizer())

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self._optimizer().state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._optimizer().load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError("StandardStep.setup(model, config) must be called before use")
        return self.optimizer
