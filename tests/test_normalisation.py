"""One numpy normalisation for the runtime, datasets, ``qcompile run`` and the parity check — bit for bit
what each computed before it was shared — and one torch path for training batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qcompile.data import ArrayDataset, DatasetSplits
from qcompile.runtime.normalisation import normalise
from qcompile.train import Batches

MEAN, STD = (0.13, 0.52, 0.9), (0.31, 0.07, 1.7)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).random((7, 3, 5, 4), dtype=np.float32)


def axis1_formula(x, mean, std):
    """The session's and the parity check's former inline computation."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def chw_formula(x, mean, std):
    """DatasetSplits.normalize's former computation (NCHW batches and single CHW images)."""
    m, s = np.asarray(mean, np.float32).reshape(-1, 1, 1), np.asarray(std, np.float32).reshape(-1, 1, 1)
    return ((np.asarray(x, np.float32) - m) / s).astype(np.float32, copy=False)


def test_the_shared_function_equals_each_former_formula_bit_for_bit(images):
    out = normalise(images, MEAN, STD)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out, axis1_formula(images, MEAN, STD))
    assert np.array_equal(out, chw_formula(images, MEAN, STD))
    assert np.array_equal(normalise(images[0], MEAN, STD, channel_axis=-3), chw_formula(images[0], MEAN, STD))
    sequence = images.reshape(7, 3, 20)  # (N, C, L): channels on axis 1 whatever the rank
    assert np.array_equal(normalise(sequence, MEAN, STD), axis1_formula(sequence, MEAN, STD))


def test_datasets_and_training_batches_agree(images):
    splits = DatasetSplits("t", ArrayDataset(images, np.zeros(7, np.int64)), ArrayDataset(images, np.zeros(7, np.int64)),
                           ["a"], MEAN, STD)
    assert np.array_equal(splits.normalize(images), normalise(images, MEAN, STD))
    assert np.array_equal(splits.normalize(images[2]), normalise(images, MEAN, STD)[2])
    inputs, _ = next(Batches(splits.train, 7, torch.device("cpu"), MEAN, STD).in_order())
    assert np.array_equal(inputs.numpy(), normalise(images, MEAN, STD))  # the torch path computes the same floats
