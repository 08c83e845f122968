"""Per-channel input normalisation, ``(x - mean) / std``: the one numpy definition.

Training feeds a model normalised images, so every place that runs a model on raw images outside the
training loop — the session's ``normalize=True``, ``qcompile run``, a dataset's ``normalize``, the
compiler's ORT-vs-PyTorch parity check — must compute exactly the same float32 values, or accuracy and
parity shift by rounding. They all call :func:`normalise`. (Inside the training loop, batches are
normalised on the model's device in torch: ``qcompile.train.Batches`` with ``Task.batch``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalise(x: np.ndarray, mean: Sequence[float], std: Sequence[float], channel_axis: int = 1) -> np.ndarray:
    """``(x - mean) / std`` with one ``mean``/``std`` value per channel along ``channel_axis`` (1 for a batch
    ``N, C, ...``; -3 also takes a single ``C, H, W`` image), computed with float32 statistics and returned
    as a contiguous float32 array."""
    shape = [1] * np.ndim(x)
    shape[channel_axis] = -1
    out = (x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray(out, dtype=np.float32)
