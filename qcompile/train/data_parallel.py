"""The finetuning loop's data-parallel side: each global batch's shard, its sample count, global means, seeds.

Under torchrun (:mod:`qcompile.distributed`) every rank walks the same global batches — the epoch's
permutation depends on (seed, epoch) only — and trains on its contiguous shard of each. What the loop
needs beyond that is here:

1. The strategy's :class:`~qcompile.distributed.GradientAverager` (:meth:`StepStrategy.data_parallel`,
   which refuses a strategy that has not said how its update is shared) is told this rank's share of
   each global batch, so averaged gradients are the full batch's even when a batch splits unevenly.
2. A step's metrics become the global batch's means, the same on every rank (progress, history and
   divergence checks then agree across ranks).
3. Random ops in the forward (dropout, the codec's training noise, mixup) draw from per-rank streams:
   rank 0 keeps the run's stream (that of a single process, and the one a checkpoint saves), rank r > 0
   reseeds from (seed, rank, global step). With the same stream everywhere, the ranks would draw the same
   noise for different samples. A resumed run is therefore repeatable, but when forward ops are random
   it is not bitwise the uninterrupted multi-rank run (the other ranks' streams restart at the resume
   step).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from qcompile import distributed
from qcompile.train.strategy import StepStrategy


class DataParallel:
    """What the loop does per global batch under several ranks (see the module docstring)."""

    def __init__(self, averager: distributed.GradientAverager, batch_size: int):
        self.averager, self.batch_size = averager, batch_size

    @staticmethod
    def select(indices: np.ndarray) -> np.ndarray:
        """This rank's shard of one global batch's indices."""
        return distributed.shard(indices)

    def global_count(self, order: np.ndarray, step: int, local: int) -> int:
        """Samples in global batch ``step`` of ``order``; sets this rank's share for the averager."""
        n = len(order[step * self.batch_size:(step + 1) * self.batch_size])
        self.averager.weight = local / n
        return n

    @staticmethod
    def global_means(metrics: dict[str, float], local: int, n: int) -> dict[str, float]:
        """Per-batch means over this rank's ``local`` samples → the means over the global batch's ``n``."""
        sums = distributed.sum_values([v * local for v in metrics.values()])
        return {k: v / n for k, v in zip(metrics, sums)}


def data_parallel(model: nn.Module, strategy: StepStrategy, n: int, batch_size: int, seed: int,
                  global_step: int) -> DataParallel | None:
    """Under several ranks: the loop's :class:`DataParallel` (and per-rank random streams); None alone."""
    if not distributed.active():
        return None
    distributed.check_batches(n, batch_size)
    averager = strategy.data_parallel(model)
    seed_rank(seed, global_step)
    return DataParallel(averager, batch_size)


def seed_rank(seed: int, global_step: int) -> None:
    """Rank r > 0: global RNGs from (seed, r, global step); rank 0 keeps its stream."""
    r = distributed.rank()
    if r == 0:
        return
    state = np.random.SeedSequence([seed % 2**63, r, global_step]).generate_state(2, dtype=np.uint32)
    torch.manual_seed(int(state[0]) << 32 | int(state[1]))
    np.random.seed(int(state[0]))
    random.seed(int(state[1]))
