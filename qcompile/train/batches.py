"""Numpy datasets → batches of tensors in a task's format, on a device, in a given order.

The loop, evaluation, calibration and BatchNorm re-estimation all read data through
:class:`Batches`, so inputs are normalised one way (the task's :meth:`~qcompile.tasks.Task.batch`
with per-channel ``mean``/``std`` tensors made here) wherever a model sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from qcompile.errors import ConfigError, DataError
from qcompile.tasks import Task, get_task


class Batches:
    """Numpy dataset → (inputs, targets) tensors on ``device`` in the task's format, in a given order."""

    def __init__(self, dataset: Any, batch_size: int, device: torch.device,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 task: Task | str | None = None):
        self.x, self.y = check_dataset(dataset)
        self.batch_size = batch_size
        self.device = device
        self.task = get_task(task)
        self.mean, self.std = self._norm_tensors(mean, std)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def in_order(
        self, order: np.ndarray | None = None, start: int = 0,
        select: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start+1, ...`` of ``order`` (default: dataset order); ``select`` picks the part
        of each batch's indices this process trains on (a rank's shard of the global batch)."""
        for b in range(start, len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl] if order is not None else sl
            if select is not None:
                idx = select(idx if order is not None else np.arange(len(self.y))[sl])
            yield self.task.batch(self.x[idx], self.y[idx], self.device, self.mean, self.std)

    def _norm_tensors(self, mean, std) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if mean is None or std is None:
            return None, None
        if self.x.ndim < 2 or self.x.shape[1] != len(mean):
            raise ConfigError(
                f"mean/std have {len(mean)} values but the inputs have shape {tuple(self.x.shape)} "
                "(channels on axis 1)",
                hint="give one mean and one std value per input channel",
            )
        shape = (1, len(mean)) + (1,) * (self.x.ndim - 2)

        def as_tensor(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=self.device).reshape(shape)

        return as_tensor(mean), as_tensor(std)



def check_dataset(dataset: Any, name: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of ``dataset``: non-empty numpy arrays of equal length, or a DataError."""
    x, y = getattr(dataset, "x", None), getattr(dataset, "y", None)
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"the {name} dataset must have numpy arrays .x and .y",
                        hint="pass an ArrayDataset (qcompile.data) or any object with .x/.y numpy arrays")
    if len(x) != len(y) or len(y) == 0:
        raise DataError(f"the {name} dataset has {len(x)} inputs and {len(y)} labels",
                        hint="inputs and labels must be non-empty and of equal length")
    return x, y
