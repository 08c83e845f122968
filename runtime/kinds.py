"""Artifact kinds, and :func:`load`: open any artifact as the session object of its kind.

A kind names what an artifact is for (``classifier`` now; a learned ``codec`` or a ``dynamic``
model later) and how to run it. It declares the graphs, side tables and manifest fields it needs,
and an opener that turns the opened :class:`~qcompile.runtime.container.Contents` into something
callable. Kinds shipped with the runtime are imported on first use (the ``_BUILTIN`` map), so
``import qcompile.runtime`` stays cheap; plug-ins call :func:`register_kind`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from qcompile.runtime.container import SINGLE_GRAPH, Contents, read_artifact
from qcompile.runtime.engine import Engine
from qcompile.runtime.errors import ArtifactError

_BUILTIN = {  # kind -> module that registers it when imported
    "classifier": "qcompile.runtime.session",
    "codec": "qcompile.runtime.codec.session",
    "dynamic": "qcompile.runtime.dynamic",
}
_KINDS: dict[str, Kind] = {}


@dataclass(frozen=True)
class Kind:
    """One artifact kind: what its artifacts must hold, and how to open them."""

    name: str
    opener: Callable[[Contents], Any]
    graphs: tuple[str, ...]  # graph roles; ("model",) = one graph, which may be a plain .onnx file
    tables: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # manifest fields beyond the standard ones (see Manifest.extra)
    description: str = ""

    def check(self, contents: Contents) -> None:
        """The artifact holds every graph, table and field this kind needs; else :class:`ArtifactError`."""
        manifest, path = contents.manifest, contents.path
        missing = {
            "graphs": [g for g in self.graphs if g not in contents.roles],
            "tables": [t for t in self.tables if t not in manifest.tables],
            "manifest fields": [f for f in self.fields if f not in manifest.extra],
        }
        wanting = "; ".join(f"{what} {names}" for what, names in missing.items() if names)
        if wanting:
            single = missing["graphs"] and contents.roles == (SINGLE_GRAPH,)
            form = " (a single .onnx file holds one graph: this kind is written as a bundle)" if single else ""
            raise ArtifactError(f"{path} is a {self.name!r} artifact without its {wanting}{form}",
                                hint="re-export the model with qcompile; the artifact is incomplete")


def register_kind(name: str, opener: Callable[[Contents], Any], *, graphs: Sequence[str] = (SINGLE_GRAPH,),
                  tables: Sequence[str] = (), fields: Sequence[str] = (), description: str = "") -> Kind:
    """Make :func:`load` open artifacts of kind ``name`` with ``opener(contents)``; returns the record.

    ``graphs``/``tables``/``fields`` are checked before ``opener`` is called, so an opener can rely on
    them. Registering a name twice replaces the earlier kind (a plug-in may refine a built-in).
    """
    if not name.isidentifier():
        raise ValueError(f"kind names are identifiers, got {name!r}")
    kind = Kind(name, opener, tuple(graphs), tuple(tables), tuple(fields), description)
    _KINDS[name] = kind
    return kind


def get_kind(name: str, source: str = "this artifact") -> Kind:
    """The registered kind ``name``; a built-in is imported on first use."""
    if name not in _KINDS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _KINDS:
        raise ArtifactError(
            f"{source} is an artifact of kind {name!r}, which this qcompile-runtime cannot open "
            f"(known kinds: {', '.join(available_kinds())})",
            hint=f"import the plug-in that registers kind {name!r} before opening it, "
                 "or upgrade qcompile-runtime (pip install -U qcompile-runtime)",
        )
    return _KINDS[name]


def available_kinds() -> list[str]:
    return sorted(set(_KINDS) | set(_BUILTIN))


def load(path: str | Path, providers: str | Sequence[str] = "auto", intra_op_threads: int | None = None,
         spinning: bool | None = None) -> Any:
    """Open the artifact at ``path`` as its kind's session: a :class:`~qcompile.runtime.Session` for a
    classifier, whatever the kind's opener returns otherwise.

    ``providers``, ``intra_op_threads`` and ``spinning`` (``None``: the runtime's default, off) apply to
    every onnxruntime session it builds.
    """
    contents = read_artifact(path, Engine.create(providers, intra_op_threads, spinning))
    kind = get_kind(contents.manifest.kind, contents.source)
    kind.check(contents)
    return kind.opener(contents)
