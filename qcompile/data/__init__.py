"""Datasets as numpy arrays, loaded without torch so the torch-free ``qcompile run`` can use them.

``load_dataset("digits" | "mnist:PATH" | "folder:PATH[?size=N]" | "npz:PATH")`` returns
:class:`DatasetSplits` with float32 NCHW images in [0, 1] and train-split normalisation stats.
"""

from __future__ import annotations

from qcompile.data.arrays import ArrayDataset, DatasetSplits, channel_stats, iterate_batches
from qcompile.data.idx import parse_idx, read_idx
from qcompile.data.sources import SPEC_FORMS, load_dataset, load_digits, load_folder, load_mnist, load_npz

__all__ = [
    "ArrayDataset",
    "DatasetSplits",
    "SPEC_FORMS",
    "channel_stats",
    "iterate_batches",
    "load_dataset",
    "load_digits",
    "load_folder",
    "load_mnist",
    "load_npz",
    "parse_idx",
    "read_idx",
]
