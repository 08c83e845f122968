"""Evaluation: a task's summary of a model on a dataset, in eval mode.

Under several ranks every rank scores the whole dataset (the loop's test set included) rather than a part of
it: a model may keep state from evaluation — a per-image bit-width selector may count the widths its
evaluations choose, for an export to read — so scoring parts would leave the ranks, and rank 0's
checkpoint, with different models. The price is the whole test pass on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from qcompile.modes import preserved_modes
from qcompile.tasks import Task
from qcompile.train.batches import Batches


def evaluate(model: nn.Module, dataset: Any, batch_size: int = 256, device: str | torch.device | None = None,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
             task: Task | str | None = None) -> dict[str, float]:
    """The task's evaluation summary on ``dataset``, in eval mode under no_grad — for classification
    ``{"acc": accuracy in [0, 1], "loss": mean cross-entropy}``.

    Every submodule's train/eval mode is restored afterwards, so a deliberately frozen
    BatchNorm inside a training model stays frozen.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    batches = Batches(dataset, batch_size, device, mean, std, task)
    sums: dict[str, float] = {}
    with preserved_modes(model, train=False), torch.no_grad():
        for inputs, targets in batches.in_order():
            for key, value in batches.task.evaluation_sums(model(inputs), targets).items():
                sums[key] = sums.get(key, 0) + value
    return batches.task.summarise(sums, len(batches.y))


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
