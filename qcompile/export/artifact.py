"""Write qcompile artifacts: the one place a manifest goes onto disk.

Two forms (read back by :mod:`qcompile.runtime.container`):

* a single-graph kind (the classifier) is one plain ``.onnx`` file, the most portable form; the
  exporter puts :func:`manifest_props` into its ``metadata_props``;
* a multi-graph kind (a codec's encoder + decoder + entropy tables, a dynamic model's selector +
  per-configuration graphs) is one bundle, written by :func:`write_bundle`.

The manifest format itself (fields, JSON encoding, validation) is defined once, in the runtime
(:mod:`qcompile.runtime.manifest`); this module only fills in who wrote it and writes the bytes.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qcompile.atomic import atomic_write
from qcompile.runtime.container import MANIFEST_MEMBER, graph_member, table_member
from qcompile.runtime.manifest import MANIFEST_KEY, Manifest
from qcompile.version import __version__

PRODUCER = f"qcompile {__version__}"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: the same model gives the same bytes


class SerializableGraph(Protocol):
    def SerializeToString(self) -> bytes: ...  # noqa: N802 (protobuf's name)


def manifest(kind: str, **fields: Any) -> Manifest:
    """A manifest of ``kind`` written by this qcompile (producer and format filled in)."""
    return Manifest(kind=kind, producer=PRODUCER, **fields)


def manifest_props(m: Manifest) -> dict[str, str]:
    """The ``metadata_props`` that carry ``m`` in a single ONNX file."""
    if m.graphs or m.tables:
        raise ValueError("a single ONNX file holds one graph and no tables; write a bundle (write_bundle)")
    return {MANIFEST_KEY: m.to_json()}


def write_bundle(path: str | Path, m: Manifest, graphs: Mapping[str, bytes | SerializableGraph],
                 tables: Mapping[str, np.ndarray] | None = None) -> int:
    """Write a bundle atomically: ``manifest.json``, then ``<role>.onnx`` per graph and ``<name>.npy``
    per table, in the order given, uncompressed (packed codes do not compress, and onnxruntime reads
    the graphs straight from the bytes). ``m.graphs``/``m.tables`` are set from the mappings.
    Returns the file size.
    """
    tables = dict(tables or {})
    m = dataclasses.replace(m, graphs=tuple(graphs), tables=tuple(tables))
    text = m.to_json()  # validates: roles and table names are identifiers, the manifest reads back
    if not m.graphs:
        raise ValueError("a bundle needs at least one graph")
    members = [(MANIFEST_MEMBER, text.encode("utf-8"))]
    members += [(graph_member(role), g if isinstance(g, bytes) else g.SerializeToString())
                for role, g in graphs.items()]
    members += [(table_member(name), _npy(name, a)) for name, a in tables.items()]

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.create_system, info.external_attr = 3, 0o644 << 16  # the same bytes on every OS
                z.writestr(info, data)

    return atomic_write(path, write)


def _npy(name: str, array: np.ndarray) -> bytes:
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise ValueError(f"table {name!r} has dtype {array.dtype}; bundles hold numeric arrays only")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
