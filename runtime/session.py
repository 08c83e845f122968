"""Run an exported model: provider choice, input checks, batching and normalisation.

A :class:`Session` holds one ``onnxruntime.InferenceSession`` and, besides it, only a flag set at the
first run (idempotent). ORT's ``run`` is safe to call from many threads at once, so one ``Session``
can serve a thread pool without locks. It is the ``classifier`` kind's session: it registers that
kind with :func:`qcompile.runtime.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from qcompile.runtime.artifact import Artifact
from qcompile.runtime.container import Contents, read_artifact
from qcompile.runtime.engine import Engine
from qcompile.runtime.errors import ArtifactError, InputError, OutputError
from qcompile.runtime.kinds import register_kind
from qcompile.runtime.manifest import Dim
from qcompile.runtime.normalisation import normalise

CLASSIFIER = "classifier"


class Session:
    """An exported classifier ready to run. ``run`` takes one batch; ``predict`` any number of samples.

    ``spinning`` lets onnxruntime's worker threads busy-wait between kernels; ``None`` takes the
    measured default, :data:`~qcompile.runtime.engine.DEFAULT_SPINNING` (off).
    """

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] = "auto",
        intra_op_threads: int | None = None,
        spinning: bool | None = None,
    ):
        contents = read_artifact(path, Engine.create(providers, intra_op_threads, spinning))
        if contents.manifest.kind != CLASSIFIER:
            raise ArtifactError(
                f"{path} is a {contents.manifest.kind!r} artifact; Session runs classifiers",
                hint="open it with qcompile.runtime.load(path), which returns the session of its kind",
            )
        self._open(contents)

    @classmethod
    def from_contents(cls, contents: Contents) -> Session:
        """The opener of the ``classifier`` kind (see :func:`qcompile.runtime.load`)."""
        session = cls.__new__(cls)
        session._open(contents)
        return session

    def _open(self, contents: Contents) -> None:
        self.spinning = contents.engine.spinning  # whether onnxruntime's workers busy-wait (for reports)
        self._ort = contents.session()
        self.artifact = Artifact.from_contents(contents)
        # a class list is checked against the graph's output width, or at the first run if that is dynamic
        self._width_checked = self.artifact.output_width is not None

    @property
    def providers(self) -> list[str]:
        """The execution providers ORT actually uses, in priority order."""
        return self._ort.get_providers()

    def run(self, x: np.ndarray) -> np.ndarray:
        """One batch through the model; returns the first output (the logits, for a classifier)."""
        check_input(x, self.artifact.input_shape, self.artifact.input_dtype)
        return self._run(x)

    def predict(self, x: np.ndarray, batch_size: int = 64, normalize: bool = False) -> np.ndarray:
        """Outputs for all of ``x``, run ``batch_size`` samples at a time (or the model's fixed batch).

        ``normalize=True`` first applies the artifact's ``(x - mean) / std``, for raw [0, 1] images.
        """
        shape = self.artifact.input_shape
        check_input(x, (None, *shape[1:]), self.artifact.input_dtype)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) == 0:
            raise InputError("predict got 0 samples", hint="pass at least one sample")
        if normalize:
            x = self.normalize(x)
        step = shape[0] or batch_size  # a model exported with a fixed batch only accepts that batch
        outputs = []
        for start in range(0, len(x), step):
            batch = x[start : start + step]
            n = len(batch)
            if n < step and shape[0]:  # pad the last batch up to the fixed size, drop the padding after
                batch = np.concatenate([batch, np.zeros((step - n, *batch.shape[1:]), batch.dtype)])
            outputs.append(self._run(batch)[:n])
        return np.concatenate(outputs)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` over axis 1 (channels) with the artifact's statistics, as float32."""
        mean, std = self.artifact.mean, self.artifact.std
        if mean is None or std is None:
            raise ArtifactError(
                f"{self.artifact.path} has no mean/std metadata, so normalize=True cannot be applied",
                hint="normalise the inputs yourself and call with normalize=False, or re-export with qcompile",
            )
        out = normalise(x, mean, std)
        if not np.isfinite(out).all() and np.isfinite(x).all():
            raise InputError(f"normalising with the artifact's mean {list(mean)} / std {list(std)} overflows float32",
                             hint="pass float32 images in [0, 1] (divide uint8 images by 255)")
        return out

    def _run(self, x: np.ndarray) -> np.ndarray:
        name, output = self.artifact.input_name, self.artifact.output_names[0]
        out = self._ort.run([output], {name: x})[0]
        if out.ndim == 0 or out.shape[0] != len(x):  # nothing to split into samples, batch or score
            raise OutputError(f"{self.artifact.path} returned an output of shape {list(out.shape)} for a batch of "
                              f"{len(x)}: its first output must have one row per sample",
                              hint="export the model with the batch as the first dimension of its output "
                                   "(e.g. [batch, classes] scores)")
        if not self._width_checked:
            self.artifact.check_output_width(out.shape)
            self._width_checked = True
        if out.dtype.kind == "f" and not np.isfinite(out).all() and np.isfinite(x).all():
            raise self._non_finite(out)
        return out

    def _non_finite(self, out: np.ndarray) -> OutputError:
        """Finite inputs, NaN/inf outputs: never a result to report, always a broken model or input scale."""
        art = self.artifact
        stats = f" (its mean {list(art.mean)}, std {list(art.std)})" if art.mean is not None else ""
        return OutputError(
            f"{art.path} returned {int((~np.isfinite(out)).sum())} NaN/inf values among {out.size} outputs for "
            "finite inputs",
            hint=f"likely causes: inputs on another scale than in training (normalize=True applies the artifact's "
                 f"normalisation{stats} to float32 images in [0, 1]), or weights/BatchNorm statistics that "
                 "overflow (re-export after calibrating or re-estimating BatchNorm on data)",
        )

    def __repr__(self) -> str:
        return f"Session({str(self.artifact.path)!r}, providers={self.providers})"


register_kind(CLASSIFIER, Session.from_contents,
              description="one graph: images -> class scores [batch, classes]")


def check_input(x: object, shape: tuple[Dim, ...], dtype: str) -> None:
    """Raise :class:`InputError` saying what differs and how to fix it, unless ``x`` fits the input."""
    expected = format_shape(shape)
    if not isinstance(x, np.ndarray):
        raise InputError(
            f"input must be a numpy array, got {type(x).__name__}",
            hint=f"convert it with np.asarray(x, dtype=np.{dtype}) and shape {expected}",
        )
    if x.dtype != np.dtype(dtype):
        scale = " and divide by 255 (uint8 images)" if x.dtype == np.uint8 else ""
        raise InputError(
            f"input dtype is {x.dtype}, the model expects {dtype}",
            hint=f"pass {dtype}: x.astype(np.{dtype}){scale}",
        )
    if x.ndim != len(shape):
        if x.ndim == len(shape) - 1 and _fits(x.shape, shape[1:]):
            hint = "add a batch dimension: x[None] (or np.expand_dims(x, 0))"
        else:
            hint = f"reshape the input to {expected}"
        raise InputError(
            f"input has shape {x.shape} ({x.ndim}-D), the model expects {expected} ({len(shape)}-D)", hint=hint
        )
    if not _fits(x.shape, shape):
        bad = [i for i, (got, want) in enumerate(zip(x.shape, shape)) if want is not None and got != want]
        if len(shape) == 4 and _fits(x.shape[1:], (shape[2], shape[3], shape[1])):
            hint = "the input looks channels-last (NHWC); transpose it: x.transpose(0, 3, 1, 2)"
        elif bad == [0]:
            hint = f"the model was exported with a fixed batch of {shape[0]}; use predict() to batch for you"
        else:
            hint = f"resize/reshape the input to {expected}"
        dims = ", ".join(f"dim {i} is {x.shape[i]} (expected {shape[i]})" for i in bad)
        raise InputError(f"input has shape {x.shape}, the model expects {expected}: {dims}", hint=hint)


def format_shape(shape: tuple[Dim, ...]) -> str:
    """``(batch, 1, 28, 28)``: dynamic dims shown by role instead of ``None``."""
    names = ["batch" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(shape)]
    return f"({', '.join(names)})"


def _fits(got: tuple[int, ...], want: tuple[Dim, ...]) -> bool:
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))
