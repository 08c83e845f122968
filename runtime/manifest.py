"""The artifact manifest: one versioned description of what a qcompile artifact holds.

Format 1 (compact JSON, one object)::

    {"format":1,"kind":"classifier","producer":"qcompile 0.2.0","method":"ste","task":"classification",
     "input":{"shape":[null,1,28,28],"dtype":"float32","mean":[0.13],"std":[0.31]},
     "classes":["0","1",...],"layers":[["conv1","Conv2d",4,8,"int4"],...]}

Bundles add ``"graphs":["encoder","decoder"]`` and ``"tables":["cdf"]``. ``layers`` are rows whose
columns are :data:`LAYER_FIELDS` (plus the graph role in a bundle): naming the columns once keeps a
20-layer manifest under half the size of one written as objects, and the manifest's bytes count in
every file. The compiler writes it with :meth:`Manifest.to_json` and the runtime reads it with
:func:`parse_manifest`, so both sides share one definition and what is written is what is read.

Version policy: ``format`` grows when an older runtime would misread an artifact (a field it must
understand, a new container layout). Readers reject a newer format, ignore fields they do not know
(kept in :attr:`Manifest.extra` for the kind that does), and read format 1 forever.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from qcompile.runtime.errors import ArtifactError

FORMAT_VERSION = 2  # the newest manifest format this runtime reads and this compiler writes
# Files are written in the oldest format that describes them, so older runtimes keep reading them. Format 2 is
# written only for files that a format-1 reader would run wrongly: a "target" that changes how the session is
# built (ort-int8: QDQ fusion on, packed weights widened in memory), which a 0.2 runtime would ignore.
BASE_FORMAT = 1
SESSION_TARGET_FORMAT = 2
MANIFEST_KEY = "qcompile.manifest"  # where a single .onnx file keeps its manifest (metadata_props)
LAYER_FIELDS = ("name", "op", "w_bits", "a_bits", "weight_format")
REQUIRED = ("format", "kind", "producer")
MAX_DEPTH = 8  # the format nests 4 levels; anything much deeper is broken or hostile
MIN_STD = 1e-6  # a smaller std magnifies float32 input rounding a millionfold; qcompile gives a constant channel std 1
_REEXPORT = "re-export the model with qcompile, or remove the broken metadata entry"

Dim = int | None


@dataclass(frozen=True)
class InputSpec:
    """The model input: ``shape`` (``None`` for dynamic dims), dtype, and the normalisation it expects."""

    shape: tuple[Dim, ...] | None = None
    dtype: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"shape": self.shape, "dtype": self.dtype, "mean": self.mean, "std": self.std}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Manifest:
    """What an artifact holds. ``format`` 0 marks a file without a manifest (qcompile 0.1.0 or foreign ONNX)."""

    kind: str
    producer: str
    format: int = BASE_FORMAT
    method: str | None = None
    task: str | None = None  # what the outputs mean (a registered task); None: classification, as 0.1.0 files
    input: InputSpec | None = None
    classes: tuple[str, ...] | None = None
    layers: tuple[dict[str, Any], ...] = ()  # {name, op, w_bits, a_bits, weight_format[, graph]}
    graphs: tuple[str, ...] = ()  # graph roles of a bundle; empty in a single .onnx (its one graph is "model")
    tables: tuple[str, ...] = ()  # side tables (numpy arrays) of a bundle
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields a kind defines beyond these

    @property
    def producer_version(self) -> str | None:
        """``"0.2.0"`` from ``"qcompile 0.2.0"``; ``None`` when the producer is not qcompile."""
        return qcompile_version(self.producer)

    def to_json(self) -> str:
        """Compact JSON, checked by the reader's own rules: a manifest the runtime would reject is never written."""
        d: dict[str, Any] = {"format": self.format, "kind": self.kind, "producer": self.producer}
        for key in ("method", "task"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.input is not None:
            d["input"] = self.input.to_dict()
        if self.classes:
            d["classes"] = list(self.classes)
        if self.layers:
            d["layers"] = [[layer.get(k) for k in LAYER_FIELDS] + ([layer["graph"]] if "graph" in layer else [])
                           for layer in self.layers]
        for key in ("graphs", "tables"):
            if getattr(self, key):
                d[key] = list(getattr(self, key))
        clash = set(self.extra) & set(_FIELDS)
        if clash:
            raise ValueError(f"extra manifest fields {sorted(clash)} shadow standard ones")
        d.update(self.extra)
        source = "the manifest being written"
        _validate(d, source)
        try:
            return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError as e:  # NaN/inf in a kind's own fields
            raise ArtifactError(f"{source}: {e}", hint="write finite numbers only") from None


def parse_manifest(text: str, source: str) -> Manifest:
    """Read and validate a manifest's JSON; every problem is an :class:`ArtifactError` naming ``source``."""
    return _validate(load_json(text, source, "the manifest", dict), source)


def _validate(d: dict[str, Any], source: str) -> Manifest:
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ArtifactError(f"{source}: the manifest lacks required field(s) {missing}", hint=_REEXPORT)
    fmt = d["format"]
    if not _is_int(fmt) or fmt < 1:
        raise ArtifactError(f"{source}: manifest format {_short(fmt)} is not an integer >= 1", hint=_REEXPORT)
    producer = _str(d, "producer", source)
    if fmt > FORMAT_VERSION:
        from qcompile.runtime.version import __version__

        version = qcompile_version(producer)
        need = f">= {version}" if version else "a newer version"
        raise ArtifactError(
            f"{source} uses artifact format {fmt}; this qcompile-runtime ({__version__}) reads formats up to "
            f"{FORMAT_VERSION} (the file was written by {producer})",
            hint=f"upgrade qcompile-runtime to {need} (pip install -U qcompile-runtime)",
        )
    return _manifest(d, fmt, source)


def legacy_manifest(meta: Mapping[str, str], source: str) -> Manifest:
    """A classifier manifest from the separate keys qcompile 0.1.0 wrote (or from none: a foreign ONNX file)."""
    layers = _legacy_json(meta, "qcompile.layers", list, source)
    d: dict[str, Any] = {
        "kind": "classifier",
        "producer": f"qcompile {meta['qcompile.version']}" if "qcompile.version" in meta else "unknown",
        "method": meta.get("qcompile.method"),
        "input": _legacy_json(meta, "qcompile.input", dict, source),
        "classes": _legacy_json(meta, "qcompile.classes", list, source),
        # 0.1.0 wrote layers as objects, format 1 as rows: both are validated as rows
        "layers": None if layers is None else [_legacy_layer(row, source) for row in layers],
    }
    return _manifest({k: v for k, v in d.items() if v is not None}, 0, source)


def qcompile_version(producer: str) -> str | None:
    """``"0.2.0"`` from ``"qcompile 0.2.0"``; ``None`` for any other producer."""
    name, _, version = producer.partition(" ")
    return version if name == "qcompile" and version else None


def load_json(text: str, source: str, what: str, kind: type) -> Any:
    """``json.loads`` that turns broken, hostile (deeply nested) or mistyped JSON into :class:`ArtifactError`."""
    try:
        value = json.loads(text)
    except RecursionError:
        value = None
        error = f"nests deeper than Python can parse (more than {MAX_DEPTH} levels are never written)"
    except ValueError as e:
        value, error = None, f"is not valid JSON ({e})"
    else:
        error = None if _depth(value) <= MAX_DEPTH else f"nests deeper than {MAX_DEPTH} levels"
    if error is None and not isinstance(value, kind):
        error = f"should be a JSON {'object' if kind is dict else kind.__name__}"
    if error:
        raise ArtifactError(f"{source}: {what} {error}", hint=_REEXPORT)
    return value


# ----------------------------------------------------------------------------- field validation
def _manifest(d: dict[str, Any], fmt: int, source: str) -> Manifest:
    kind = _str(d, "kind", source)
    inp = d.get("input")
    if inp is not None and not isinstance(inp, dict):
        raise ArtifactError(f"{source}: manifest input should be an object, got {_short(inp)}", hint=_REEXPORT)
    classes = _strings(d, "classes", source)
    return Manifest(
        kind=kind,
        producer=_str(d, "producer", source),
        format=fmt,
        method=None if d.get("method") is None else _str(d, "method", source),
        task=None if d.get("task") is None else _str(d, "task", source),
        input=None if inp is None else _input(inp, source),
        classes=classes or None,  # 0.1.0 wrote [] for "unknown"
        layers=tuple(_layer(row, source) for row in _list(d, "layers", source)),
        graphs=_names(d, "graphs", source),
        tables=_names(d, "tables", source),
        extra={k: v for k, v in d.items() if k not in _FIELDS},
    )


_FIELDS = ("format", "kind", "producer", "method", "task", "input", "classes", "layers", "graphs", "tables")


def _input(d: dict[str, Any], source: str) -> InputSpec:
    shape = d.get("shape")
    if shape is not None and not (isinstance(shape, list) and all(s is None or (_is_int(s) and s >= 1) for s in shape)):
        raise ArtifactError(f"{source}: metadata input shape {_short(shape)} is not a list of positive ints/nulls",
                            hint=_REEXPORT)
    dtype = d.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise ArtifactError(f"{source}: metadata input dtype {_short(dtype)} is not a string", hint=_REEXPORT)
    mean, std = _floats(d, "mean", source), _floats(d, "std", source)
    spec = InputSpec(None if shape is None else tuple(shape), dtype, mean, std)
    check_input_spec(spec, source)
    return spec


def check_input_spec(spec: InputSpec, source: str) -> None:
    """mean/std are both given or both absent, one value or one per channel, finite, std comfortably > 0."""
    mean, std = spec.mean, spec.std
    if (mean is None) != (std is None):
        raise ArtifactError(f"{source}: metadata input has only one of mean/std", hint=_REEXPORT)
    if mean is None or std is None:
        return
    channels = spec.shape[1] if spec.shape is not None and len(spec.shape) >= 2 else None
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != 1 and channels is not None and len(values) != channels:
            raise ArtifactError(f"{source}: metadata input {key} has {len(values)} values for {channels} channels",
                                hint=_REEXPORT)
    if not all(math.isfinite(m) for m in mean):
        raise ArtifactError(f"{source}: metadata input mean {_short(list(mean))} is not finite", hint=_REEXPORT)
    if not all(math.isfinite(s) and s >= MIN_STD for s in std):
        raise ArtifactError(
            f"{source}: metadata input std {_short(list(std))} has a value that is not finite and >= {MIN_STD:g} "
            "(dividing by it gives inf/NaN or amplifies rounding noise into the model)", hint=_REEXPORT)
    worst = max(abs(m) + 1 for m in mean) / min(std)  # |(x - mean) / std| for x in [0, 1], at worst
    if not worst < 3.4e38:  # float32's largest value: normalised inputs would overflow to inf
        raise ArtifactError(
            f"{source}: metadata input mean {_short(list(mean))} / std {_short(list(std))} overflow float32",
            hint=_REEXPORT)


def _layer(row: Any, source: str) -> dict[str, Any]:
    n = len(LAYER_FIELDS)
    ok = (isinstance(row, list) and len(row) in (n, n + 1) and isinstance(row[0], str) and isinstance(row[1], str)
          and _is_int(row[2]) and (row[3] is None or _is_int(row[3])) and isinstance(row[4], str)
          and all(isinstance(r, str) for r in row[n:]))
    if not ok:
        raise ArtifactError(f"{source}: manifest layer {_short(row)} is not a row [name, op, w_bits, a_bits, "
                            "weight_format(, graph)]", hint=_REEXPORT)
    return dict(zip(LAYER_FIELDS + ("graph",), row))


def _legacy_layer(obj: Any, source: str) -> list:
    if not isinstance(obj, dict):
        raise ArtifactError(f"{source}: metadata layer {_short(obj)} should be a JSON object", hint=_REEXPORT)
    return [obj.get(k) for k in LAYER_FIELDS]


def _legacy_json(meta: Mapping[str, str], key: str, kind: type, source: str) -> Any:
    return load_json(meta[key], source, f"metadata {key!r}", kind) if key in meta else None


def _str(d: dict, key: str, source: str) -> str:
    if not isinstance(d[key], str) or not d[key]:
        raise ArtifactError(f"{source}: manifest {key} {_short(d[key])} is not a non-empty string", hint=_REEXPORT)
    return d[key]


def _list(d: dict, key: str, source: str) -> list:
    value = d.get(key, [])
    if not isinstance(value, list):
        raise ArtifactError(f"{source}: manifest {key} should be a JSON list, got {_short(value)}", hint=_REEXPORT)
    return value


def _strings(d: dict, key: str, source: str) -> tuple[str, ...]:
    values = _list(d, key, source)
    if not all(isinstance(v, str) for v in values):
        raise ArtifactError(f"{source}: manifest {key} should be a list of strings", hint=_REEXPORT)
    return tuple(values)


def _names(d: dict, key: str, source: str) -> tuple[str, ...]:
    """Graph roles and table names: they become member names in a bundle, so plain identifiers only."""
    names = _strings(d, key, source)
    bad = [n for n in names if not n.isidentifier()]
    if bad or len(set(names)) != len(names):
        raise ArtifactError(f"{source}: manifest {key} {_short(list(names))} must be distinct identifiers",
                            hint=_REEXPORT)
    return names


def _floats(d: dict, key: str, source: str) -> tuple[float, ...] | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
        raise ArtifactError(f"{source}: metadata input {key} {_short(value)} is not a non-empty list of numbers",
                            hint=_REEXPORT)
    return tuple(float(v) for v in value)


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: a hostile value must not become a megabyte error message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile file must not reach the recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest
