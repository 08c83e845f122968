"""What a classifier artifact says about itself: its manifest checked against its graph.

The manifest (:mod:`qcompile.runtime.manifest`) is validated on its own when it is read; here it
meets the graph onnxruntime loaded. Every manifest field is optional for a classifier — a plain ONNX
file from elsewhere still runs, and the graph gives input name, shape and dtype — but a manifest that
contradicts the graph is an error: a wrong ``mean`` or class list would give wrong answers silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from qcompile.runtime.container import Contents, read_artifact
from qcompile.runtime.engine import Engine
from qcompile.runtime.errors import ArtifactError
from qcompile.runtime.manifest import Dim, InputSpec, Manifest, check_input_spec

# onnxruntime's type strings -> numpy dtype names (the ones a classifier input can have)
ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
_REEXPORT = "re-export the model with qcompile, or remove the broken metadata entry"


@dataclass(frozen=True)
class Artifact:
    """Facts about one classifier file. ``input_shape`` uses ``None`` for dynamic dims (usually batch)."""

    path: Path
    file_size_bytes: int
    input_name: str
    input_shape: tuple[Dim, ...]
    input_dtype: str
    output_names: tuple[str, ...]
    version: str | None = None  # the qcompile version that wrote it
    method: str | None = None
    layers: tuple[dict[str, Any], ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    output_width: int | None = None  # classes per output row, when the graph fixes it
    manifest: Manifest | None = field(default=None, compare=False, repr=False)

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """Read an artifact without optimising the graph (cheap; for inspection, not inference)."""
        return cls.from_contents(read_artifact(path, Engine.inspection()))

    @classmethod
    def from_contents(cls, contents: Contents) -> Artifact:
        """Combine the graph's signature with the manifest; :class:`ArtifactError` where they disagree."""
        return cls.from_session(contents.path, contents.session(), contents.manifest, contents.file_size_bytes)

    @classmethod
    def from_session(cls, path: str | Path, session: ort.InferenceSession, manifest: Manifest,
                     file_size_bytes: int | None = None) -> Artifact:
        path = Path(path)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ArtifactError(
                f"{path} has {len(inputs)} inputs {[i.name for i in inputs]}; the runtime runs single-input models",
                hint="export the model with one image input",
            )
        graph_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        graph_dtype = ORT_TO_NUMPY.get(inputs[0].type, inputs[0].type)
        spec = manifest.input or InputSpec()
        shape = _merge_shape(spec.shape, graph_shape, path)
        if spec.dtype is not None and spec.dtype != graph_dtype:
            raise ArtifactError(f"{path}: metadata input dtype {spec.dtype} contradicts the graph's {graph_dtype}",
                                hint=_REEXPORT)
        check_input_spec(InputSpec(shape, graph_dtype, spec.mean, spec.std), str(path))
        width = _output_width(outputs[0].shape, manifest.classes, path)
        if width is not None:
            _check_width(path, manifest.classes, width)
        return cls(
            path=path,
            file_size_bytes=path.stat().st_size if file_size_bytes is None else file_size_bytes,
            input_name=inputs[0].name,
            input_shape=shape,
            input_dtype=graph_dtype,
            output_names=tuple(o.name for o in outputs),
            version=manifest.producer_version,
            method=manifest.method,
            layers=manifest.layers,
            mean=spec.mean,
            std=spec.std,
            classes=manifest.classes,
            output_width=width,
            manifest=manifest,
        )

    def check_output_width(self, shape: tuple[int, ...]) -> None:
        """A class list must name every column of a ``[batch, classes]`` output: checked at the first run
        when the graph leaves the width open."""
        _output_width(list(shape), self.classes, self.path)
        if shape:
            _check_width(self.path, self.classes, shape[-1])


def _check_width(path: Path, classes: tuple[str, ...] | None, width: int) -> None:
    if classes is not None and width != len(classes):
        raise ArtifactError(f"{path}: the metadata names {len(classes)} classes, the model outputs {width} scores",
                            hint=_REEXPORT)


def _merge_shape(declared: tuple[Dim, ...] | None, graph: tuple[Dim, ...], path: Path) -> tuple[Dim, ...]:
    """The metadata shape, checked against the graph's; the graph's when metadata has none."""
    if declared is None:
        return graph
    clash = len(declared) != len(graph) or any(
        d is not None and g is not None and d != g for d, g in zip(declared, graph)
    )
    if clash:
        raise ArtifactError(
            f"{path}: metadata input shape {list(declared)} contradicts the graph's {list(graph)}", hint=_REEXPORT
        )
    return tuple(g if g is not None else d for d, g in zip(declared, graph))


def _output_width(shape: list, classes: tuple[str, ...] | None, path: Path) -> int | None:
    """The graph's class count (last dim of a ``[batch, classes]`` output); ``None`` when it is dynamic."""
    rank_known = isinstance(shape, list)
    if classes is not None and rank_known and len(shape) != 2:
        raise ArtifactError(
            f"{path}: the metadata names {len(classes)} classes, but the model's output has shape {shape}, "
            "not [batch, classes]", hint=_REEXPORT)
    return shape[-1] if rank_known and shape and isinstance(shape[-1], int) else None
