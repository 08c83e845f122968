"""Checks that a pool is plausible and diverse in difficulty, against real data where some exists.

Two of DynaDFQ's claims can be measured cheaply (dynadfq.md §9, criteria C and D):

- **plausibility** — the data-free class similarity S_ij (classifier rows) should rank class pairs like
  the float model's confusions on real test images: :func:`similarity_confusion_spearman` is the Spearman
  correlation between the off-diagonal S_ij and the confusion counts (i predicted as j, both directions
  summed, so it is symmetric like S);
- **difficulty diversity** — the float model's prediction entropy on the pool should spread like on real
  images: :func:`wasserstein_1d` is the 1-D Wasserstein (earth mover's) distance between two samples.

numpy only: they read arrays (the pool's ``pred_entropy``, a confusion matrix, ``provenance["similarity"]``).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts C[i, j] of images of class i predicted as j (int64, classes × classes)."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally long samples (NaN when either is constant)."""
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def similarity_confusion_spearman(similarity: np.ndarray, confusion: np.ndarray) -> float:
    """Spearman over the pairs i < j of S_ij against C_ij + C_ji."""
    s, c = np.asarray(similarity, np.float64), np.asarray(confusion, np.float64)
    upper = np.triu_indices(len(s), k=1)
    return spearman(s[upper], (c + c.T)[upper])


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between the empirical distributions of ``a`` and ``b``: ∫ |F_a(t) − F_b(t)| dt."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    grid = np.concatenate([a, b])
    grid.sort(kind="stable")
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))
