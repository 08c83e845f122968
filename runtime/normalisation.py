"""Per-channel input normalisation, ``(x - mean) / std``: the one numpy definition, and which values to use.

Training feeds a model normalised images, so every place that runs a model on raw images outside the
training loop — the session's ``normalize=True``, ``qcompile run``, a dataset's ``normalize``, the
compiler's ORT-vs-PyTorch parity check — must compute exactly the same float32 values, or accuracy and
parity shift by rounding. They all call :func:`normalise`. (Inside the training loop, batches are
normalised on the model's device in torch: ``qcompile.train.Batches`` with ``Task.batch``.)

Which values: a pretrained model expects the statistics it was trained with, not ones recomputed from
whatever data compiles it (a CIFAR ResNet-20 trained with the usual CIFAR-10 constants loses points when
fed its data's own statistics). So a :class:`Normalization` is chosen once — a named preset, explicit
values, or ``data`` (the training split's statistics, computed when the data is loaded) — validated,
recorded in the run directory and the artifact, and reused by every later step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qcompile.runtime.errors import ActionableError
from qcompile.runtime.manifest import MIN_STD


def normalise(x: np.ndarray, mean: Sequence[float], std: Sequence[float], channel_axis: int = 1) -> np.ndarray:
    """``(x - mean) / std`` with one ``mean``/``std`` value per channel along ``channel_axis`` (1 for a batch
    ``N, C, ...``; -3 also takes a single ``C, H, W`` image), computed with float32 statistics and returned
    as a contiguous float32 array."""
    shape = [1] * np.ndim(x)
    shape[channel_axis] = -1
    out = (x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray(out, dtype=np.float32)


PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "mnist": ((0.1307,), (0.3081,)),
    "none": ((0.0,), (1.0,)),  # the model takes images in [0, 1] as they are
}
FROM_DATA = "data"  # the training split's per-channel statistics (what qcompile did before it could be chosen)
CHOICES = (*PRESETS, FROM_DATA)
_HOW = "give --norm NAME (one of " + ", ".join(CHOICES) + ") or --mean/--std with one value or one per channel, " \
       "e.g. --mean 0.4914,0.4822,0.4465 --std 0.2023,0.1994,0.2010 (API: normalization=... or mean=..., std=...)"


class NormalizationError(ActionableError, ValueError):
    """Normalisation values that are missing, malformed, not finite, ≤ 0 (std) or of the wrong channel count."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean``/``std`` (one value each, or one per channel) and where they came from:
    a preset's name, ``given`` (explicit values) or ``data``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "given"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats("mean", self.mean))
        object.__setattr__(self, "std", _floats("std", self.std))
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise NormalizationError(f"mean has {len(self.mean)} values but std has {len(self.std)}", hint=_HOW)
        if not all(s >= MIN_STD for s in self.std):
            raise NormalizationError(f"std {list(self.std)} has a value below {MIN_STD:g}",
                                     hint="every std must be a positive scale (typically 0.1–1); " + _HOW)

    @classmethod
    def preset(cls, name: str) -> Normalization:
        if name not in PRESETS:
            raise NormalizationError(f"unknown normalisation {name!r}", hint=_HOW)
        mean, std = PRESETS[name]
        return cls(mean, std, name)

    def for_channels(self, channels: int) -> Normalization:
        """One value per channel (a single value is repeated); another count is an error."""
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise NormalizationError(
                    f"{key} has {len(values)} values but the model's input has {channels} channel(s)",
                    hint=f"the input has {channels} channel(s); " + _HOW)
        return Normalization(_repeat(self.mean, channels), _repeat(self.std, channels), self.source)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """:func:`normalise` ``x`` (a batch, channels on axis 1) with these values."""
        return normalise(x, self.mean, self.std)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        return cls(tuple(d["mean"]), tuple(d["std"]), str(d.get("source", "given")))

    def describe(self) -> str:
        """'cifar10: mean 0.4914, 0.4822, 0.4465 / std 0.2023, 0.1994, 0.201' (for summaries)."""
        values = f"mean {', '.join(f'{v:.4g}' for v in self.mean)} / std {', '.join(f'{v:.4g}' for v in self.std)}"
        return f"{self.source}: {values}"


def choose(norm: str | Normalization | None = None, mean: Any = None, std: Any = None) -> Normalization | None:
    """The normalisation asked for: a preset or :class:`Normalization` (``norm``), or explicit ``mean`` and
    ``std`` (sequences, single numbers, or comma-separated text). None means ``data``: the training split's
    statistics, computed when the data is loaded."""
    if norm is not None and (mean is not None or std is not None):
        raise NormalizationError("both a named normalisation and mean/std were given", hint="give one of them; " + _HOW)
    if isinstance(norm, Normalization):
        return norm
    if norm is not None:
        name = str(norm).strip().lower()
        return None if name == FROM_DATA else Normalization.preset(name)
    if (mean is None) != (std is None):
        raise NormalizationError(f"{'mean' if mean is not None else 'std'} was given without "
                                 f"{'std' if mean is not None else 'mean'}", hint="give both; " + _HOW)
    if mean is None:
        return None
    return Normalization(parse_values("mean", mean), parse_values("std", std))


def parse_values(name: str, values: Any) -> tuple[float, ...]:
    """``'0.1,0.2'``, ``0.5`` or a sequence of numbers → a tuple of floats (finiteness checked later)."""
    if isinstance(values, str):
        parts = [p.strip() for p in values.split(",")]
        try:
            return tuple(float(p) for p in parts)
        except ValueError:
            raise NormalizationError(f"{name} {values!r} is not a comma-separated list of numbers", hint=_HOW) from None
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return (float(values),)
    return _floats(name, values)


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise NormalizationError(f"{name} {values!r} is not a sequence of numbers", hint=_HOW)
    if len(values) == 0:
        raise NormalizationError(f"{name} is empty", hint=_HOW)
    if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        raise NormalizationError(f"{name} {list(values)!r} is not a list of numbers", hint=_HOW)
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats):
        raise NormalizationError(f"{name} {list(floats)} has a value that is not finite", hint=_HOW)
    return floats


def _repeat(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return values * channels if len(values) == 1 else values


def for_scoring(artifact: Any, data_mean: Sequence[float], data_std: Sequence[float],
                given: Normalization | None = None) -> tuple[Normalization, str]:
    """How ``run`` normalises a dataset for ``artifact`` (a :class:`~qcompile.runtime.artifact.Artifact`), and
    where that came from: ``artifact`` (its recorded values), ``given`` (the user's, for an artifact that
    records none; contradicting a recorded one is an error) or ``dataset`` (the data's train statistics —
    only for a plain ONNX file, which says nothing about itself). A qcompile artifact without a recorded
    normalisation is an error rather than a silent guess: it was trained with values the data may not have."""
    shape = artifact.input_shape
    channels = shape[1] if len(shape) >= 2 and shape[1] else len(data_mean)
    recorded = None if artifact.mean is None else Normalization(artifact.mean, artifact.std, "artifact")
    if given is not None:
        given = given.for_channels(channels)
        if recorded is not None and (recorded.for_channels(channels).mean, recorded.for_channels(channels).std) != \
                (given.mean, given.std):
            raise NormalizationError(f"{artifact.path} records its normalisation ({recorded.describe()}); "
                                     f"the one given differs ({given.describe()})",
                                     hint="drop --norm/--mean/--std: an artifact is scored with the normalisation "
                                          "it was trained with")
        return given, "given"
    if recorded is not None:
        return recorded, "artifact"
    if artifact.version is not None or artifact.method is not None:
        raise NormalizationError(f"{artifact.path} is a qcompile artifact that records no input normalisation "
                                 "(compiled without data), so the data's own statistics would be a guess",
                                 hint="give the normalisation it was trained with: --norm NAME or --mean/--std "
                                      "(or export it again: qcompile export RUN_DIR --out FILE --norm NAME)")
    return Normalization(tuple(data_mean), tuple(data_std), FROM_DATA).for_channels(channels), "dataset"
