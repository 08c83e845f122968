"""Data-free synthesis: images made from a trained classifier alone (its BatchNorm statistics and classifier).

One concept per module:

- :mod:`.introspect` — the BatchNorm layers and the classifier, found in the traced graph;
- :mod:`.bn_statistics` — the BN-statistics matching loss at BN inputs;
- :mod:`.similarity` — class similarity from the classifier rows, similar-class groups;
- :mod:`.labels` — soft labels with per-image difficulty (easy one-hot, hard over similar classes), soft CE;
- :mod:`.augment` — random crops and flips inside the loop;
- :mod:`.config` — the options; :mod:`.progress` — the progress display;
- :mod:`.loop` — the optimisation loop (:func:`synthesize`), checkpointed per batch;
- :mod:`.pool` — the pool file (.npz): images, soft labels, difficulty, provenance;
- :mod:`.preview` — a grid PNG of pool images per class;
- :mod:`.diagnostics` — plausibility (similarity vs real confusions) and difficulty spread (entropy W1).

The recipe follows DynaDFQ (Hong, Baik et al., WACV 2025) on top of the IntraQ/HAST direct synthesis.
This package imports its parts on first use (the CLI's ``--help`` does not import torch).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ModelParts": "introspect", "model_parts": "introspect", "BNStatisticsLoss": "bn_statistics",
    "class_similarity": "similarity", "similar_groups": "similarity", "SoftLabelConfig": "labels",
    "LabelPlan": "labels", "sample_labels": "labels", "soft_cross_entropy": "labels", "entropy": "labels",
    "AugmentConfig": "augment", "random_view": "augment", "SynthesisConfig": "config",
    "synthesize": "loop", "SyntheticPool": "pool", "save_pool": "pool", "load_pool": "pool",
    "write_preview": "preview", "confusion_matrix": "diagnostics", "similarity_confusion_spearman": "diagnostics",
    "spearman": "diagnostics", "wasserstein_1d": "diagnostics",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
