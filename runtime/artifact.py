"""What an exported ``.onnx`` file says about itself, read through onnxruntime alone.

The exporter stores qcompile's facts as string ``metadata_props`` (``qcompile.version``,
``.method``, ``.layers``, ``.input``, ``.classes``). Any of them may be missing — a plain ONNX
file from elsewhere still runs — so every field is optional except what the graph itself tells
us (input name, shape, dtype). Malformed metadata, on the other hand, is an error: silently
ignoring a broken ``mean`` would give wrong predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import onnxruntime as ort

from qcompile.runtime.errors import ArtifactError

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

Dim = int | None


@dataclass(frozen=True)
class Artifact:
    """Facts about one model file. ``input_shape`` uses ``None`` for dynamic dims (usually batch)."""

    path: Path
    file_size_bytes: int
    input_name: str
    input_shape: tuple[Dim, ...]
    input_dtype: str
    output_names: tuple[str, ...]
    version: str | None = None
    method: str | None = None
    layers: tuple[dict[str, Any], ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        """Read an artifact without optimising the graph (cheap; for inspection, not inference)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return cls.from_session(path, open_inference_session(path, options, ["CPUExecutionProvider"]))

    @classmethod
    def from_session(cls, path: str | Path, session: ort.InferenceSession) -> Artifact:
        """Combine the graph's input signature with the ``qcompile.*`` metadata of ``session``."""
        path = Path(path)
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(
                f"{path} has {len(inputs)} inputs {[i.name for i in inputs]}; the runtime runs single-input models",
                hint="export the model with one image input",
            )
        graph_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        meta = session.get_modelmeta().custom_metadata_map
        spec = _json(meta, "qcompile.input", dict, path) or {}
        shape = _meta_shape(spec.get("shape"), graph_shape, path)
        mean, std = _floats(spec, "mean", path), _floats(spec, "std", path)
        _check_stats(mean, std, shape, path)
        classes = _json(meta, "qcompile.classes", list, path)
        return cls(
            path=path,
            file_size_bytes=path.stat().st_size,
            input_name=inputs[0].name,
            input_shape=shape,
            input_dtype=ORT_TO_NUMPY.get(inputs[0].type, inputs[0].type),
            output_names=tuple(o.name for o in session.get_outputs()),
            version=meta.get("qcompile.version"),
            method=meta.get("qcompile.method"),
            layers=tuple(_json(meta, "qcompile.layers", list, path) or ()),
            mean=mean,
            std=std,
            classes=None if classes is None else tuple(str(c) for c in classes),
        )


def open_inference_session(
    path: str | Path, options: ort.SessionOptions, providers: Sequence[str], disabled_optimizers: Sequence[str] = ()
) -> ort.InferenceSession:
    """``ort.InferenceSession`` with a missing or non-ONNX file reported as :class:`ArtifactError`."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ArtifactError(f"model file {path} {what}", hint="pass the path of an exported .onnx file")
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers),
                                    disabled_optimizers=list(disabled_optimizers) or None)
    except Exception as e:  # onnxruntime raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise ArtifactError(
            f"onnxruntime cannot load {path}: {e}",
            hint="check that the file is a complete ONNX model (e.g. not truncated, not a PyTorch checkpoint)",
        ) from None


def _json(meta: dict[str, str], key: str, kind: type, path: Path) -> Any:
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: metadata {key!r} is not valid JSON ({e})", hint=_REEXPORT) from None
    if not isinstance(value, kind):
        raise ArtifactError(f"{path}: metadata {key!r} should be a JSON {kind.__name__}", hint=_REEXPORT)
    return value


def _meta_shape(declared: Any, graph: tuple[Dim, ...], path: Path) -> tuple[Dim, ...]:
    """The metadata shape, checked against the graph's; the graph's when metadata has none."""
    if declared is None:
        return graph
    if not isinstance(declared, list) or not all(d is None or isinstance(d, int) for d in declared):
        raise ArtifactError(f"{path}: metadata input shape {declared!r} is not a list of ints/nulls", hint=_REEXPORT)
    clash = len(declared) != len(graph) or any(
        d is not None and g is not None and d != g for d, g in zip(declared, graph)
    )
    if clash:
        raise ArtifactError(
            f"{path}: metadata input shape {declared} contradicts the graph's {list(graph)}", hint=_REEXPORT
        )
    return tuple(g if g is not None else d for d, g in zip(declared, graph))


def _floats(spec: dict, key: str, path: Path) -> tuple[float, ...] | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
        raise ArtifactError(
            f"{path}: metadata input {key} {value!r} is not a non-empty list of numbers", hint=_REEXPORT
        )
    return tuple(float(v) for v in value)


def _check_stats(mean, std, shape: tuple[Dim, ...], path: Path) -> None:
    if (mean is None) != (std is None):
        raise ArtifactError(f"{path}: metadata input has only one of mean/std", hint=_REEXPORT)
    if mean is None:
        return
    channels = shape[1] if len(shape) >= 2 else None
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != 1 and channels is not None and len(values) != channels:
            raise ArtifactError(
                f"{path}: metadata input {key} has {len(values)} values for {channels} channels", hint=_REEXPORT
            )
    if any(s <= 0 for s in std):
        raise ArtifactError(f"{path}: metadata input std {list(std)} has a value <= 0", hint=_REEXPORT)
