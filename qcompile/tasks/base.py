"""The Task interface: what a model is trained for, so the training loop never has to know.

The loop (``qcompile.train``) owns data order, devices, checkpoints and progress; a
:class:`~qcompile.train.strategy.StepStrategy` owns the update; a task owns everything that depends
on what the outputs *mean*:

1. **batch format** — :meth:`Task.batch` turns numpy ``x``/``y`` into ``(inputs, targets)`` tensors
   (float32 inputs normalised per channel; targets of the task's dtype, via :meth:`Task.targets`);
   :meth:`Task.check_targets` refuses labels the model's outputs cannot be scored against, up front;
2. **objective** — :meth:`Task.loss` against the targets and, where the task defines one,
   :meth:`Task.distillation_loss` against a float teacher's outputs (blended by
   :func:`qcompile.train.objective.make_objective`);
3. **metrics** — :meth:`Task.batch_metrics` per training batch (means, weighted by batch size over
   an epoch: they become ``train_<name>`` in history), and the evaluation summary over a test set
   (:meth:`Task.evaluation_sums` per batch, :meth:`Task.summarise` at the end: ``test_<name>``);
   ``loss`` is always part of both;
4. **deployment** — :meth:`Task.runtime`: the torch-free half (``qcompile.runtime.tasks``) that
   scores ORT outputs for ``qcompile run`` and measures ORT-vs-PyTorch parity.

``outputs`` is whatever the model returns (a tensor, or a tuple for a codec's reconstruction and
likelihoods); only the task looks inside it.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from qcompile.errors import ConfigError

if TYPE_CHECKING:
    from qcompile.runtime.tasks import RuntimeTask


class Task(abc.ABC):
    """What a model is trained and judged for; see the module docstring. Instances hold no state."""

    name: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()  # per-batch and evaluation metrics besides "loss", in display order
    headline: ClassVar[str] = "loss"  # the one number that says how good a model is (e.g. "acc")

    # ------------------------------------------------------------------ batch format
    def batch(self, x: np.ndarray, y: np.ndarray, device: torch.device, mean: torch.Tensor | None,
              std: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` on ``device``: float32 inputs, ``(x - mean) / std`` when given."""
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        if mean is not None:
            inputs = (inputs - mean) / std
        return inputs, self.targets(x, y).to(device)

    @abc.abstractmethod
    def targets(self, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        """The training targets of a batch (on the CPU), from its raw inputs ``x`` and labels ``y``."""

    def check_targets(self, y: np.ndarray, outputs: Any, split: str) -> None:
        """Raise a :class:`~qcompile.errors.DataError` (or ConfigError) when the labels ``y`` of the
        ``split`` cannot be scored against outputs like ``outputs`` — before any training, rather than at
        the batch that first holds a bad label. Default: every label is fine."""

    # ------------------------------------------------------------------ objective
    @abc.abstractmethod
    def loss(self, outputs: Any, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch (the objective's signature: ``inputs`` may be unused)."""

    def distillation_loss(self, student: Any, teacher: Any, temperature: float) -> torch.Tensor:
        """How far ``student`` outputs are from a float ``teacher``'s. Tasks without one keep this default."""
        raise NotImplementedError

    @property
    def distils(self) -> bool:
        """Whether this task defines :meth:`distillation_loss` (``kd_alpha > 0`` needs it)."""
        return type(self).distillation_loss is not Task.distillation_loss

    def check_distillation(self, kd_alpha: float) -> None:
        """A ConfigError before training when distillation is asked of a task that has none."""
        if kd_alpha > 0 and not self.distils:
            raise ConfigError(f"kd_alpha={kd_alpha} asks for distillation, which task {self.name!r} does not define",
                              hint="set kd_alpha=0 (CLI: --kd-alpha 0)")

    # ------------------------------------------------------------------ metrics
    @abc.abstractmethod
    def batch_metrics(self, outputs: Any, targets: torch.Tensor) -> dict[str, float]:
        """Means over one training batch of every name in :attr:`metrics` (called under no_grad)."""

    @abc.abstractmethod
    def evaluation_sums(self, outputs: Any, targets: torch.Tensor) -> dict[str, float]:
        """Sums over one evaluation batch: ``loss`` and what :meth:`summarise` needs for :attr:`metrics`."""

    def summarise(self, sums: dict[str, float], samples: int) -> dict[str, float]:
        """The evaluation summary from the summed batches. Default: every sum divided by ``samples``."""
        return {key: value / samples for key, value in sums.items()}

    def empty_summary(self) -> dict[str, float | None]:
        """The summary's keys with no values: an epoch that was not evaluated."""
        return dict.fromkeys((*self.metrics, "loss"))

    # ------------------------------------------------------------------ deployment
    def runtime(self) -> RuntimeTask:
        """The torch-free half registered under this task's name (``qcompile.runtime.tasks``)."""
        from qcompile.runtime.tasks import get_runtime_task

        return get_runtime_task(self.name)
