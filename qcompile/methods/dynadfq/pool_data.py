"""A synthetic pool as the splits qcompile trains on: the images with their anchor classes as labels.

The last tenth of the pool (at least one image) is held out as the "test" split, so the accuracy a
data-free compile reports is on synthetic images it did not train on — agreement with the classes the
images were synthesised for, not accuracy on real data (its name says so). The normalisation is the
pool's (the one the model was trained with). The labels are the anchor classes, or with ``soft`` the
pool's soft labels (probability rows, which classification takes as targets: soft-label
cross-entropy; easy images' rows are one-hot). The static configuration trains on anchors, with
distillation from the float model (``--kd-alpha``) carrying the soft labels' information.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qcompile.data import ArrayDataset, DatasetSplits
from qcompile.errors import DataError
from qcompile.synthesis.pool import load_pool

PREFIX = "pool:"


def is_pool(data: DatasetSplits) -> bool:
    return data.name.startswith(PREFIX)


def pool_splits(path: str | Path, soft: bool = False) -> DatasetSplits:
    pool = load_pool(path)
    if len(pool) < 2:
        raise DataError(f"{path} holds {len(pool)} image(s); training needs at least 2 (one is held out)",
                        hint="synthesise a larger pool (qcompile synthesize --images N)")
    held_out = max(1, len(pool) // 10)
    x = np.ascontiguousarray(pool.images, dtype=np.float32)
    y = np.ascontiguousarray(pool.labels, dtype=np.float32) if soft else pool.anchors.astype(np.int64)
    return DatasetSplits(f"{PREFIX}{path} (synthetic; test = {held_out} held-out pool images)",
                         ArrayDataset(x[:-held_out], y[:-held_out]), ArrayDataset(x[-held_out:], y[-held_out:]),
                         list(pool.classes), tuple(pool.mean), tuple(pool.std))
