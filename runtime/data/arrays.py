"""In-memory datasets as plain numpy arrays.

Every loader in :mod:`qcompile.runtime.data.sources` returns the same shape of thing — float32 NCHW
images in [0, 1] and int64 labels — so training, calibration and the torch-free ``run`` never
care where the data came from. Normalisation statistics live next to the data (computed on the
train split) because the exporter writes them into the artifact for the runtime to reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from qcompile.runtime.normalisation import normalise


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images ``x`` (float32, NCHW, values in [0, 1]) and labels ``y``, same length: int64 class indices,
    or float32 (N, classes) soft labels (a synthetic pool's class probabilities, for training)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        # Loaders build these; a violation here is a bug in a loader, not a user error.
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise ValueError(f"x must be float32 NCHW, got {self.x.dtype} with shape {self.x.shape}")
        if not ((self.y.ndim == 1 and self.y.dtype == np.int64) or (self.y.ndim == 2 and self.y.dtype == np.float32)):
            raise ValueError(f"y must be 1-D int64 labels or 2-D float32 soft labels, got {self.y.dtype} with "
                             f"shape {self.y.shape}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int) -> ArrayDataset:
        """The first ``n`` samples (all of them if there are fewer), for quick runs and calibration."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        return ArrayDataset(self.x[:n], self.y[:n])


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """A named dataset: train and test splits, class names and per-channel train statistics."""

    name: str
    train: ArrayDataset
    test: ArrayDataset
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def build(cls, name: str, train: ArrayDataset, test: ArrayDataset, classes: list[str]) -> DatasetSplits:
        """Create splits with mean/std computed on ``train`` (never on test, to avoid leakage)."""
        mean, std = channel_stats(train.x)
        return cls(name, train, test, list(classes), mean, std)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one sample."""
        c, h, w = self.train.x.shape[1:]
        return (c, h, w)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` per channel, as float32; works for NCHW batches and single CHW images."""
        return normalise(x, self.mean, self.std, channel_axis=-3)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of an NCHW array; a constant channel gets std 1 so dividing is safe."""
    x64 = x.astype(np.float64, copy=False)
    mean = x64.mean(axis=(0, 2, 3))
    std = x64.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def iterate_batches(ds: ArrayDataset, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` numpy batches in order; the last batch may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(ds), batch_size):
        yield ds.x[start : start + batch_size], ds.y[start : start + batch_size]
