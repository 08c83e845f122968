"""Train/eval modes set for a block of code and restored afterwards, module by module.

Evaluation, calibration, BatchNorm re-estimation and parity checks each need a model in a
particular mode for a moment. ``model.train(previous)`` afterwards would be wrong: a model can
hold submodules in different modes on purpose (a frozen BatchNorm inside a training model,
activation quantizers observing while the rest is in eval), so every module's own flag is put
back as it was, even when the block raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def preserved_modes(model: nn.Module, train: bool | None = None) -> Iterator[nn.Module]:
    """Inside the block ``model`` is in train (``train=True``) or eval (``False``) mode, or left as it
    is (``None``: the block sets modes itself); afterwards every submodule has its own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        if train is not None:
            model.train(train)
        yield model
    finally:
        for module, training in modes:
            module.training = training
