"""The two on-disk forms of an artifact, read into one :class:`Contents`.

* a **single ONNX file**: its one graph (role ``"model"``), the manifest in ``metadata_props``
  (:data:`~qcompile.runtime.manifest.MANIFEST_KEY`), or none (qcompile 0.1.0's separate keys, or a
  foreign ONNX file: both read as a classifier);
* a **bundle**: an uncompressed zip holding ``manifest.json`` (first), ``<role>.onnx`` per graph and
  ``<name>.npy`` per side table, exactly the members the manifest lists.

The manifest of an ONNX file is read straight from the protobuf (a few top-level fields, skipping
the graph) before onnxruntime sees the graph, so a newer format or an unknown kind is reported as
such — not as whatever onnxruntime makes of an opset it does not know.
"""

from __future__ import annotations

import io
import mmap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qcompile.runtime.dithered import dither_tensors
from qcompile.runtime.engine import Engine
from qcompile.runtime.errors import ArtifactError
from qcompile.runtime.manifest import MANIFEST_KEY, Manifest, legacy_manifest, parse_manifest

BUNDLE_MAGIC = b"PK\x03\x04"  # a zip's first local file header
MANIFEST_MEMBER = "manifest.json"
SINGLE_GRAPH = "model"  # the role of a single ONNX file's one graph
_METADATA_PROPS = 14  # ModelProto field number of metadata_props (key = 1, value = 2)


def graph_member(role: str) -> str:
    return f"{role}.onnx"


def table_member(name: str) -> str:
    return f"{name}.npy"


@dataclass
class Contents:
    """An artifact opened but not yet run: its manifest, its graphs (as sessions on demand), its tables."""

    path: Path
    manifest: Manifest
    engine: Engine
    roles: tuple[str, ...]
    file_size_bytes: int
    _graphs: dict[str, bytes] = field(default_factory=dict, repr=False)
    _tables: dict[str, bytes] = field(default_factory=dict, repr=False)
    _sessions: dict[str, ort.InferenceSession] = field(default_factory=dict, repr=False)

    @property
    def source(self) -> str:
        return str(self.path)

    def session(self, role: str = SINGLE_GRAPH) -> ort.InferenceSession:
        """The onnxruntime session of the graph ``role``, built (once) with the engine's settings and the
        seeded-dither tensors its manifest describes (:mod:`qcompile.runtime.dithered`)."""
        if role not in self.roles:
            raise ArtifactError(f"{self.path} has no graph {role!r} (it has {list(self.roles)})",
                                hint="open the artifact with the kind it was written as (qcompile.runtime.load)")
        if role not in self._sessions:
            bundled = role in self._graphs
            external = dither_tensors(self.manifest.extra, role, self.source)
            source = f"{self.path}:{graph_member(role)}" if bundled else self.source
            model = self._graphs[role] if bundled else self.path
            from qcompile.runtime.widen import ORT_INT8, target_of, widen_initializers  # widen reads via this module

            integer = target_of(self.manifest.extra) == ORT_INT8
            if integer:  # packed 4/2-bit weights become int8 in memory, for the integer kernels
                model, _ = widen_initializers(model if bundled else self.path.read_bytes())
            self._sessions[role] = self.engine.session(model, source, external, integer_kernels=integer)
        return self._sessions[role]

    def graph_bytes(self, role: str) -> bytes:
        """The serialized ONNX graph ``role`` of a bundle, as stored (to fingerprint it, or to build a
        variant of it)."""
        if role not in self._graphs:
            raise ArtifactError(f"{self.path} has no bundled graph {role!r} (it has {sorted(self._graphs)})",
                                hint="open the artifact with the kind it was written as (qcompile.runtime.load)")
        return self._graphs[role]

    def table(self, name: str) -> np.ndarray:
        """A side table of a bundle, as saved (numeric arrays only: ``allow_pickle=False``)."""
        if name not in self._tables:
            raise ArtifactError(f"{self.path} has no table {name!r} (it has {sorted(self._tables)})",
                                hint="open the artifact with the kind it was written as (qcompile.runtime.load)")
        try:
            return np.load(io.BytesIO(self._tables[name]), allow_pickle=False)
        except ValueError as e:
            raise ArtifactError(f"{self.path}: table {name!r} is not a numeric .npy array ({e})",
                                hint="re-export the model with qcompile") from None


def read_artifact(path: str | Path, engine: Engine) -> Contents:
    """Open ``path`` in whichever form it has; nothing is run, graphs become sessions on demand."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ArtifactError(f"model file {path} {what}", hint="pass the path of an exported .onnx file or bundle")
    size = path.stat().st_size
    if size == 0:
        raise ArtifactError(f"model file {path} is empty", hint="export the model again; the file was not written")
    with path.open("rb") as f:
        is_bundle = f.read(len(BUNDLE_MAGIC)) == BUNDLE_MAGIC
    return _read_bundle(path, engine, size) if is_bundle else _read_onnx(path, engine, size)


def _read_onnx(path: Path, engine: Engine, size: int) -> Contents:
    meta = onnx_metadata_props(path)
    source = str(path)
    manifest = parse_manifest(meta[MANIFEST_KEY], source) if MANIFEST_KEY in meta else legacy_manifest(meta, source)
    if manifest.graphs or manifest.tables:
        raise ArtifactError(
            f"{path} is a single ONNX file, but its manifest lists graphs {list(manifest.graphs)} and tables "
            f"{list(manifest.tables)}", hint="open the bundle the graph came from, or re-export the model")
    return Contents(path, manifest, engine, (SINGLE_GRAPH,), size)


def _read_bundle(path: Path, engine: Engine, size: int) -> Contents:
    source = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if MANIFEST_MEMBER not in names:
                raise ArtifactError(
                    f"{path} is a zip archive without {MANIFEST_MEMBER}, so not a qcompile bundle "
                    f"(a PyTorch checkpoint is a zip too); it holds {names[:5]}",
                    hint="pass an exported .onnx file or a bundle written by qcompile")
            manifest = parse_manifest(_utf8(z.read(MANIFEST_MEMBER), source), f"{source}:{MANIFEST_MEMBER}")
            expected = ([MANIFEST_MEMBER] + [graph_member(r) for r in manifest.graphs]
                        + [table_member(t) for t in manifest.tables])
            if sorted(names) != sorted(expected) or len(names) != len(set(names)):
                raise ArtifactError(f"{path} holds {sorted(names)}, its manifest lists {sorted(expected)}",
                                    hint="re-export the model with qcompile; the bundle was altered or truncated")
            graphs = {r: z.read(graph_member(r)) for r in manifest.graphs}
            tables = {t: z.read(table_member(t)) for t in manifest.tables}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise ArtifactError(f"{path} starts like a zip archive (a bundle) but cannot be read as one: {e}",
                            hint="pass an exported .onnx file or bundle; if it is one, it is truncated or corrupt: "
                                 "export it again") from None
    if not manifest.graphs:
        raise ArtifactError(f"{path}: the bundle's manifest lists no graphs", hint="re-export the model with qcompile")
    return Contents(path, manifest, engine, manifest.graphs, size, graphs, tables)


def onnx_metadata_props(path: Path) -> dict[str, str]:
    """The model-level ``metadata_props`` of an ONNX file, read from the protobuf wire format.

    Only top-level fields are walked; the graph (usually almost all of the file) is skipped by its
    length. A file that is not a well-formed protobuf is an :class:`ArtifactError`.
    """
    props: dict[str, str] = {}
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            for number, payload in protobuf_fields(data, 0, len(data)):
                if number == _METADATA_PROPS and payload is not None:
                    entry = {n: span for n, span in protobuf_fields(data, *payload) if span is not None}
                    key, value = (bytes(data[slice(*entry.get(n, (0, 0)))]) for n in (1, 2))
                    props[_utf8(key, str(path))] = _utf8(value, str(path))
        except (IndexError, ValueError) as e:
            raise ArtifactError(
                f"{path} is not an ONNX model ({e})",
                hint="check that the file is a complete ONNX model (e.g. not truncated, not a PyTorch checkpoint)",
            ) from None
    return props


def protobuf_fields(data, start: int, end: int):
    """``(field number, (begin, end) of a length-delimited payload, else None)`` of one protobuf message."""
    pos = start
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        span = None
        if wire == 0:
            _, pos = read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = read_varint(data, pos)
            span, pos = (pos, pos + length), pos + length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")
        if pos > end or number == 0:
            raise ValueError(f"malformed protobuf field at byte {pos}")
        yield number, span


def read_varint(data, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint longer than 10 bytes at byte {pos}")


def _utf8(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{source}: metadata is not UTF-8 text ({e})",
                            hint="re-export the model with qcompile") from None
