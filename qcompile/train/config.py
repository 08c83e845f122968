"""TrainConfig: every knob of a finetuning run, validated once, serialisable with ``asdict``.

Validation happens at construction so a typo fails before minutes of tracing and calibration,
with a message that lists what is accepted. The config is stored inside checkpoints, which is
how a resume detects that it is being continued with different settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qcompile.errors import ConfigError
from qcompile.validation import is_int, is_number, require

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")

# Fields that may change between a run and its resume: they do not alter the trajectory.
RESUMABLE_CHANGES = frozenset({"max_steps", "checkpoint_every", "eval_every", "device"})


@dataclass
class TrainConfig:
    """Settings of one finetuning run. ``mean``/``std`` normalise batches on the fly (per channel)."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    checkpoint_every: int = 0
    eval_every: int = 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_steps: int | None = None
    sync_bn: bool = False  # under several ranks: BatchNorm trains on the global batch's statistics
    # From this epoch (0-based) on, BatchNorm uses its running statistics, frozen (None: batch statistics
    # throughout). Folded into the op, they let the ort-int8 target train its integer-kernel forward.
    freeze_bn_after: int | None = None

    def __post_init__(self) -> None:
        self.mean = _as_floats("mean", self.mean)
        self.std = _as_floats("std", self.std)
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown training option(s): {', '.join(unknown)}",
                hint=f"accepted options: {', '.join(sorted(known))}",
            )
        return cls(**data)

    def batchnorm_frozen(self, epoch: int) -> bool:
        """Does BatchNorm use frozen running statistics in ``epoch`` (0-based)?"""
        return self.freeze_bn_after is not None and epoch >= self.freeze_bn_after

    def should_evaluate(self, epoch: int) -> bool:
        """Evaluate after ``epoch`` (0-based)? Every ``eval_every`` epochs, and always after the last."""
        if epoch == self.epochs - 1:
            return True
        return self.eval_every > 0 and (epoch + 1) % self.eval_every == 0


def resolve_device(name: str):
    """'auto' → cuda when available, else cpu. A requested but absent cuda is a ConfigError."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name!r} was requested but CUDA is not available",
            hint="use device='auto' (picks cuda when present) or device='cpu'",
        )
    return device


def _as_floats(name: str, values: Any) -> tuple[float, ...] | None:
    if values is None:
        return None
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a sequence of numbers, got {values!r}",
            hint=f"give one {name} value per input channel, e.g. {name}=(0.5, 0.5, 0.5)",
        ) from None


def _validate(c: TrainConfig) -> None:
    require(is_int(c.epochs) and c.epochs >= 1, f"epochs must be an integer >= 1, got {c.epochs!r}",
             "set epochs to the number of passes over the training set, e.g. epochs=10")
    require(is_int(c.batch_size) and c.batch_size >= 1,
             f"batch_size must be an integer >= 1, got {c.batch_size!r}", "e.g. batch_size=64")
    require(is_number(c.lr) and c.lr > 0, f"lr must be a finite positive number, got {c.lr!r}",
             "finetuning typically uses lr=1e-3 (adam) or lr=1e-2 (sgd)")
    require(c.optimizer in OPTIMIZERS, f"unknown optimizer {c.optimizer!r}",
             f"accepted optimizers: {', '.join(OPTIMIZERS)}")
    require(is_number(c.momentum) and 0.0 <= c.momentum < 1.0,
             f"momentum must be a number in [0, 1), got {c.momentum!r}", "e.g. momentum=0.9 with optimizer='sgd'")
    require(is_number(c.weight_decay) and c.weight_decay >= 0,
             f"weight_decay must be a finite number >= 0, got {c.weight_decay!r}", "e.g. weight_decay=5e-4, or 0 to disable")
    require(c.schedule in SCHEDULES, f"unknown schedule {c.schedule!r}",
             f"accepted schedules: {', '.join(SCHEDULES)}")
    require(is_int(c.step_size) and c.step_size >= 1,
             f"step_size must be an integer >= 1 (epochs), got {c.step_size!r}",
             "with schedule='step' the lr is multiplied by gamma every step_size epochs")
    require(is_number(c.gamma) and c.gamma > 0, f"gamma must be a finite number > 0, got {c.gamma!r}", "e.g. gamma=0.1")
    require(is_int(c.seed), f"seed must be an integer, got {c.seed!r}", "e.g. seed=0")
    require(isinstance(c.device, str) and bool(c.device),
             f"device must be a string, got {c.device!r}", "use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    require(is_number(c.kd_alpha) and 0.0 <= c.kd_alpha <= 1.0,
             f"kd_alpha must be a number in [0, 1], got {c.kd_alpha!r}",
             "kd_alpha weighs distillation against cross-entropy; 0 disables distillation")
    require(is_number(c.kd_temperature) and c.kd_temperature > 0,
             f"kd_temperature must be a finite number > 0, got {c.kd_temperature!r}", "e.g. kd_temperature=4.0")
    require(is_int(c.checkpoint_every) and c.checkpoint_every >= 0,
             f"checkpoint_every must be an integer >= 0 (steps), got {c.checkpoint_every!r}",
             "0 checkpoints only at the end of each epoch")
    require(is_int(c.eval_every) and c.eval_every >= 0,
             f"eval_every must be an integer >= 0 (epochs), got {c.eval_every!r}",
             "1 evaluates after every epoch; 0 only after the last")
    require(c.max_steps is None or (is_int(c.max_steps) and c.max_steps >= 1),
             f"max_steps must be None or an integer >= 1, got {c.max_steps!r}",
             "leave max_steps=None to train for all epochs")
    require(isinstance(c.sync_bn, bool), f"sync_bn must be True or False, got {c.sync_bn!r}",
            "sync_bn=True normalises BatchNorm with the whole global batch under torchrun")
    require(c.freeze_bn_after is None or (is_int(c.freeze_bn_after) and c.freeze_bn_after >= 0),
            f"freeze_bn_after must be None or an integer >= 0 (epochs), got {c.freeze_bn_after!r}",
            "e.g. freeze_bn_after=2 with epochs=3 trains the last epoch with frozen BatchNorm statistics")
    _validate_normalisation(c.mean, c.std)


def _validate_normalisation(mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    hint = "pass both mean and std with one value per input channel, e.g. the dataset's mean/std"
    require((mean is None) == (std is None), "mean and std must be given together", hint)
    if mean is None or std is None:
        return
    require(len(mean) == len(std) and len(mean) >= 1,
             f"mean has {len(mean)} values but std has {len(std)}", hint)
    require(all(is_number(v) for v in (*mean, *std)),
            f"mean and std must be finite numbers, got mean={tuple(mean)}, std={tuple(std)}", hint)
    require(all(s > 0 for s in std), f"std values must be > 0, got {tuple(std)}", hint)
