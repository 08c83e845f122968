"""Datasets as numpy arrays, loaded without torch so the runtime's ``run`` can score an artifact.

``load_dataset("digits" | "mnist:PATH" | "folder:PATH[?size=N]" | "npz:PATH")`` returns
:class:`DatasetSplits` with float32 NCHW images in [0, 1] and train-split normalisation stats.
The compiler reads its training data with the same loaders (``qcompile.data`` re-exports them).
``folder:`` needs pillow and ``digits`` scikit-learn: extras of ``qcompile-runtime`` (``[images]``,
``[digits]``) that the compiler always installs.
"""

from __future__ import annotations

from qcompile.runtime.data.arrays import ArrayDataset, DatasetSplits, channel_stats, iterate_batches
from qcompile.runtime.data.idx import parse_idx, read_idx
from qcompile.runtime.data.sources import SPEC_FORMS, load_dataset, load_digits, load_folder, load_mnist, load_npz

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
