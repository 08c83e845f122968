"""A synthetic pool on disk: one ``.npz`` (no pickles) with images, soft labels, difficulty and provenance.

Members (N images, K classes):

==================  ==================  ============================================================
key                 dtype, shape        meaning
==================  ==================  ============================================================
``images``          float32 (N,C,H,W)   in image space, i.e. ``model_input · std + mean`` (not clipped)
``labels``          float32 (N,K)       soft labels (rows sum to 1; one-hot for easy images)
``anchors``         int64 (N,)          the class each image was synthesised for (arg-max of its label)
``hard``            bool (N,)           soft ("hard") or one-hot ("easy") label
``eps``             float32 (N,)        label mass moved off the anchor (0 for easy images)
``label_entropy``   float32 (N,)        H(label), nats
``pred_entropy``    float32 (N,)        H(float model's prediction on the image), nats
``pred_class``      int64 (N,)          the float model's arg-max on the image
``mean``, ``std``   float32 (C,)        the input normalisation the model expects
``classes``         str (K,)            class names
``provenance``      str ()              JSON: producer, model, weights digest, options, per-batch losses
``format``          int64 ()            this layout's version (1)
==================  ==================  ============================================================

Written atomically (:mod:`qcompile.atomic`); read with ``allow_pickle=False`` and checked, so a wrong or
damaged file is a :class:`~qcompile.errors.DataError` that says what is wrong.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.atomic import atomic_write
from qcompile.errors import DataError

FORMAT = 1
ARRAYS = ("images", "labels", "anchors", "hard", "eps", "label_entropy", "pred_entropy", "pred_class")
HOW = "write a pool with `qcompile synthesize MODEL --weights W.pt --input-shape ... --out pool.npz`"


@dataclass(frozen=True, eq=False)
class SyntheticPool:
    images: np.ndarray
    labels: np.ndarray
    anchors: np.ndarray
    hard: np.ndarray
    eps: np.ndarray
    label_entropy: np.ndarray
    pred_entropy: np.ndarray
    pred_class: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def summary(self) -> dict[str, Any]:
        """Counts and difficulty statistics (what ``synthesize`` reports)."""
        hard = self.hard.astype(bool)
        return {
            "images": len(self), "input_shape": list(self.images.shape[1:]), "classes": len(self.classes),
            "hard": int(hard.sum()), "easy": int((~hard).sum()),
            "label_entropy_mean": float(self.label_entropy.mean()) if len(self) else None,
            "pred_entropy_mean": float(self.pred_entropy.mean()) if len(self) else None,
            "pred_entropy_hard": float(self.pred_entropy[hard].mean()) if hard.any() else None,
            "pred_entropy_easy": float(self.pred_entropy[~hard].mean()) if (~hard).any() else None,
            "agreement": float((self.pred_class == self.anchors).mean()) if len(self) else None,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "images": self.images.astype(np.float32), "labels": self.labels.astype(np.float32),
            "anchors": self.anchors.astype(np.int64), "hard": self.hard.astype(bool),
            "eps": self.eps.astype(np.float32), "label_entropy": self.label_entropy.astype(np.float32),
            "pred_entropy": self.pred_entropy.astype(np.float32), "pred_class": self.pred_class.astype(np.int64),
            "mean": np.asarray(self.mean, np.float32), "std": np.asarray(self.std, np.float32),
            "classes": np.asarray(self.classes, dtype=str), "provenance": np.asarray(json.dumps(self.provenance)),
            "format": np.asarray(FORMAT, np.int64),
        }


def save_pool(pool: SyntheticPool, path: str | Path) -> int:
    """Write ``pool`` to ``path`` (a temporary file, then a rename); returns the size in bytes."""
    arrays = pool.arrays()
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_pool(path: str | Path) -> SyntheticPool:
    """Read and check a pool written by :func:`save_pool`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pool file {str(path)!r} does not exist", hint=HOW)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz pool ({type(exc).__name__}: {exc})", hint=HOW) from None
    missing = [k for k in (*ARRAYS, "mean", "std", "classes", "provenance", "format") if k not in data]
    if missing:
        raise DataError(f"{path} is not a synthetic pool: it lacks {', '.join(missing)}", hint=HOW)
    if int(data["format"]) > FORMAT:
        raise DataError(f"{path} has pool format {int(data['format'])}, newer than this qcompile reads ({FORMAT})",
                        hint="upgrade qcompile")
    _check_shapes(path, data)
    try:
        provenance = json.loads(str(data["provenance"]))
    except json.JSONDecodeError:
        raise DataError(f"{path}: its provenance record is not JSON", hint=HOW) from None
    return SyntheticPool(**{k: data[k] for k in ARRAYS}, mean=tuple(float(v) for v in data["mean"]),
                         std=tuple(float(v) for v in data["std"]), classes=[str(c) for c in data["classes"]],
                         provenance=provenance)


def _check_shapes(path: Path, data: dict[str, np.ndarray]) -> None:
    images, labels = data["images"], data["labels"]
    if images.ndim != 4 or images.dtype != np.float32 or not np.isfinite(images).all():
        raise DataError(f"{path}: images must be finite float32 (N, C, H, W), got {images.dtype} {images.shape}", hint=HOW)
    n, channels = images.shape[:2]
    if labels.shape != (n, len(data["classes"])) or not np.isfinite(labels).all() or (labels < 0).any() \
            or not np.allclose(labels.sum(axis=1), 1.0, atol=1e-4):
        raise DataError(f"{path}: labels must be (N={n}, classes={len(data['classes'])}) probability rows, "
                        f"got shape {labels.shape}", hint=HOW)
    for key in ARRAYS[2:]:
        if data[key].shape != (n,):
            raise DataError(f"{path}: {key} must have one value per image ({n}), got shape {data[key].shape}", hint=HOW)
    for key in ("mean", "std"):
        if data[key].shape != (channels,):
            raise DataError(f"{path}: {key} must have one value per channel ({channels})", hint=HOW)
    if not (data["std"] > 0).all():
        raise DataError(f"{path}: std must be positive", hint=HOW)

