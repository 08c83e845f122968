"""Checkpoints: atomic writes, safe loads, RNG capture, and the resume compatibility check.

Why each piece exists:
- Atomic write (temp file in the same directory, fsync, ``os.replace``): a crash or a full disk
  while saving must never destroy the previous good checkpoint.
- ``torch.load(weights_only=True)``: a checkpoint is data, not code; so the payload holds only
  tensors, dicts, lists, numbers and strings — RNG states are converted accordingly.
- RNG states (torch, cuda, numpy, python): dropout and other random ops after a resume must draw
  the same numbers as the uninterrupted run, which is what makes resume bitwise exact.
- Compatibility check: continuing with another seed, batch size or model silently produces a
  run that matches neither; refuse with a message naming the difference.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qcompile.atomic import atomic_write
from qcompile.errors import ConfigError
from qcompile.loading import unreadable_reason
from qcompile.train.config import RESUMABLE_CHANGES, TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def checkpoint_path(directory: str | os.PathLike) -> Path:
    """Where :func:`qcompile.train.finetune` keeps its checkpoint inside ``directory``."""
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: either the new file or the old one, never half."""
    atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``weights_only=True``; unreadable → ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"resume=True but there is no checkpoint at {path}",
            hint="start a fresh run with resume=False, or point checkpoint_dir at the run to continue",
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise ConfigError(
            f"cannot read checkpoint {path}: {unreadable_reason(exc)}",
            hint="the file is damaged or not a qcompile checkpoint; delete it or use another checkpoint_dir",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ConfigError(
            f"{path} is not a qcompile training checkpoint (format {FORMAT_VERSION})",
            hint="use a checkpoint_dir written by qcompile.train.finetune, or resume=False",
        )
    return payload


def check_compatible(
    payload: dict[str, Any], config: dict[str, Any], model_keys: list[str], n_train: int,
    task: str = "classification",
) -> None:
    """Raise ConfigError when resuming ``payload`` with this config/model/data/task would diverge."""
    saved_task = payload.get("task", "classification")  # checkpoints from before tasks were classification
    if saved_task != task:
        raise ConfigError(f"the checkpoint was trained for task {saved_task!r}, this run is for {task!r}",
                          hint=f"resume with task={saved_task!r}, or start fresh with resume=False")
    saved = {**TrainConfig().to_dict(), **payload["config"]}  # a field added since it was written: its default
    changed = sorted(
        k for k in set(saved) | set(config)
        if k not in RESUMABLE_CHANGES and _plain(saved.get(k)) != _plain(config.get(k))
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} → {config.get(k)!r}" for k in changed)
        raise ConfigError(
            f"the checkpoint was written with different training settings ({details})",
            hint="resume with the original settings (only max_steps, checkpoint_every, eval_every "
            "and device may change), or start fresh with resume=False",
        )
    saved_keys = set(payload["model"])
    if saved_keys != set(model_keys):
        missing = sorted(saved_keys - set(model_keys))[:5]
        extra = sorted(set(model_keys) - saved_keys)[:5]
        raise ConfigError(
            "the checkpoint's model does not match the model being trained "
            f"(only in checkpoint: {missing}, only in model: {extra})",
            hint="resume with the same model and quantization settings, or start fresh with resume=False",
        )
    if payload["n_train"] != n_train:
        raise ConfigError(
            f"the checkpoint was trained on {payload['n_train']} samples, this run has {n_train}",
            hint="resume with the same training set, or start fresh with resume=False",
        )


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal (a round trip through a checkpoint may change one to the other)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def capture_rng() -> dict[str, Any]:
    """All global RNG states as weights_only-loadable values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch (and cuda), numpy and python ``random`` so CPU runs are repeatable."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
