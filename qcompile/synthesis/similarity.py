"""Class similarity read from the classifier alone, and each class's group of most similar classes.

DynaDFQ (Hong, Baik et al., WACV 2025, "Formula 5") takes S_ij = w_i · w_j, the plain dot product of the
classifier's weight rows (bias ignored): classes whose rows point the same way are the ones the network
confuses. ``cosine`` normalises the rows first (ŵ_i · ŵ_j), the variant a reviewer asked for, since the
dot product also grows with a row's norm.
"""

from __future__ import annotations

import torch

from qcompile.errors import ConfigError

METRICS = ("dot", "cosine")


def class_similarity(weight: torch.Tensor, metric: str = "dot") -> torch.Tensor:
    """S (classes × classes) from classifier rows ``weight`` (classes × features), in float64."""
    if metric not in METRICS:
        raise ConfigError(f"unknown similarity {metric!r}", hint=f"use one of: {', '.join(METRICS)}")
    w = weight.detach().to(torch.float64).flatten(1)
    if metric == "cosine":
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return w @ w.T


def similar_groups(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """G_K(c): for each class c, the ``k`` other classes j with the largest S_cj (most similar first).

    Ties go to the lower class index, so the groups are a pure function of S."""
    classes = similarity.shape[0]
    if not 1 <= k <= classes - 1:
        raise ConfigError(f"a group of {k} similar classes is impossible with {classes} classes",
                          hint=f"choose a group size from 1 to {classes - 1}")
    s = similarity.clone()
    s.fill_diagonal_(float("-inf"))
    # stable sort on -S: equal similarities keep index order
    order = torch.sort(-s, dim=1, stable=True).indices
    return order[:, :k]
