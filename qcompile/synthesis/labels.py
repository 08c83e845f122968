"""Soft labels with per-image difficulty: "easy" images are one-hot, "hard" ones confusable with similar classes.

For a hard image of anchor class c (DynaDFQ's "plausibly difficult" images):

    y = (1 − ε)·e_c + ε·Σ_{j ∈ G_K(c)} π_j·e_j,    π_j ∝ exp(S_cj / τ_c),  ε ~ U(ε_min, ε_max)

τ_c is the standard deviation of class c's similarities to the other classes (uniform π when they are all
equal). ε_max < ½ keeps the anchor the arg-max, so the image still reads as c but leans towards its
neighbours; drawing ε per image gives a *spread* of difficulty, measured by the label entropy
H(y) = −Σ_k y_k log y_k (nats). ``groups="random"`` replaces G_K(c) by K random other classes (the
reviewers' ablation: are *similar* classes what matters?). Anchors are balanced over the classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qcompile.errors import ConfigError
from qcompile.synthesis.similarity import similar_groups

GROUPS = ("similar", "random")
MIXINGS = ("similarity", "uniform")


@dataclass(frozen=True)
class SoftLabelConfig:
    group_size: int = 2            # K
    hard_fraction: float = 0.5     # share of images with soft labels
    eps_min: float = 0.1           # mass moved off the anchor, drawn per hard image
    eps_max: float = 0.45
    groups: str = "similar"        # G_K(c): the K most similar classes, or K random ones (ablation)
    mixing: str = "similarity"     # π over the group: softmax(S_cj / τ_c), or uniform

    def __post_init__(self) -> None:
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ConfigError(f"hard fraction {self.hard_fraction} is not a share", hint="give a value in [0, 1]")
        if not 0.0 <= self.eps_min <= self.eps_max < 0.5:
            raise ConfigError(f"soft-label mass range [{self.eps_min}, {self.eps_max}] is invalid",
                              hint="need 0 <= eps-min <= eps-max < 0.5 (the anchor class must stay the most likely)")
        if self.groups not in GROUPS:
            raise ConfigError(f"unknown group choice {self.groups!r}", hint=f"use one of: {', '.join(GROUPS)}")
        if self.mixing not in MIXINGS:
            raise ConfigError(f"unknown mixing {self.mixing!r}", hint=f"use one of: {', '.join(MIXINGS)}")


@dataclass(frozen=True)
class LabelPlan:
    """One row per image: anchor class, hard or easy, ε, the soft label and its entropy."""

    anchors: torch.Tensor   # int64 (N,)
    hard: torch.Tensor      # bool (N,)
    eps: torch.Tensor       # float32 (N,), 0 for easy images
    labels: torch.Tensor    # float32 (N, classes), rows sum to 1
    entropy: torch.Tensor   # float32 (N,), H(y) in nats


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Row-wise Shannon entropy in nats (0·log 0 = 0)."""
    p = p.to(torch.float64)
    return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1).to(torch.float32)


def group_weights(similarity: torch.Tensor, groups: torch.Tensor, mixing: str) -> torch.Tensor:
    """π (classes × K): how the off-anchor mass of class c is shared over its group."""
    classes, k = groups.shape
    if mixing == "uniform":
        return torch.full((classes, k), 1.0 / k, dtype=torch.float64)
    off = similarity.masked_select(~torch.eye(classes, dtype=torch.bool)).reshape(classes, classes - 1)
    tau = off.std(dim=1, unbiased=False)
    s = similarity.gather(1, groups)
    logits = torch.where(tau[:, None] > 0, s / tau.clamp_min(1e-300)[:, None], torch.zeros_like(s))
    return torch.softmax(logits, dim=1)


def _random_groups(classes: int, k: int, generator: torch.Generator) -> torch.Tensor:
    rows = []
    for c in range(classes):
        others = torch.tensor([j for j in range(classes) if j != c])
        rows.append(others[torch.randperm(classes - 1, generator=generator)[:k]])
    return torch.stack(rows)


def sample_labels(similarity: torch.Tensor, n: int, config: SoftLabelConfig, generator: torch.Generator) -> LabelPlan:
    """Labels for ``n`` images from the class similarity S, drawn with ``generator`` (reproducible)."""
    classes = similarity.shape[0]
    groups = similar_groups(similarity, config.group_size)  # also checks that K fits the classes
    if config.groups == "random":
        groups = _random_groups(classes, config.group_size, generator)
    pi = group_weights(similarity, groups, config.mixing)
    anchors = (torch.arange(n) % classes)[torch.randperm(n, generator=generator)]
    hard = torch.zeros(n, dtype=torch.bool)
    hard[torch.randperm(n, generator=generator)[:round(n * config.hard_fraction)]] = True
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    eps = torch.where(hard, config.eps_min + (config.eps_max - config.eps_min) * u, torch.zeros_like(u))
    labels = torch.zeros(n, classes, dtype=torch.float64)
    labels[torch.arange(n), anchors] = 1.0 - eps
    labels.scatter_add_(1, groups[anchors], eps[:, None] * pi[anchors])
    labels = labels.to(torch.float32)
    return LabelPlan(anchors, hard, eps.to(torch.float32), labels, entropy(labels))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−Σ_k y_k log p_k, averaged over the batch (KL(y ‖ p) up to y's own entropy)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
