"""Torch-free deployment runtime: load a qcompile artifact and run it with onnxruntime.

Shipped on its own as the ``qcompile-runtime`` distribution (numpy, onnxruntime, constriction), which the full
``qcompile`` depends on. ``Session(path).predict(x)`` runs a classifier; ``load(path)`` opens any
artifact as the session of its kind (``register_kind`` adds kinds). ``score`` and ``benchmark`` are
what the ``qcompile-runtime run|bench`` commands (:mod:`qcompile.runtime.cli`) report, and
``qcompile.runtime.data`` loads datasets as numpy arrays. Names are loaded on first use,
so ``import qcompile.runtime.errors`` (which the compiler's errors build on) does not load onnxruntime.
"""

from __future__ import annotations

from qcompile.runtime.version import __version__

_LAZY = {
    "Artifact": "qcompile.runtime.artifact",
    "ArtifactError": "qcompile.runtime.errors",
    "Contents": "qcompile.runtime.container",
    "DataError": "qcompile.runtime.errors",
    "FORMAT_VERSION": "qcompile.runtime.manifest",
    "InputError": "qcompile.runtime.errors",
    "InputSpec": "qcompile.runtime.manifest",
    "Manifest": "qcompile.runtime.manifest",
    "MissingDependencyError": "qcompile.runtime.errors",
    "OutputError": "qcompile.runtime.errors",
    "ProviderError": "qcompile.runtime.errors",
    "RuntimeFailure": "qcompile.runtime.errors",
    "RuntimeTask": "qcompile.runtime.tasks",
    "Session": "qcompile.runtime.session",
    "TaskError": "qcompile.runtime.errors",
    "UncheckedWarning": "qcompile.runtime.errors",
    "available_kinds": "qcompile.runtime.kinds",
    "benchmark": "qcompile.runtime.bench",
    "get_runtime_task": "qcompile.runtime.tasks",
    "load": "qcompile.runtime.kinds",
    "load_dataset": "qcompile.runtime.data",
    "measure_latency": "qcompile.runtime.bench",
    "register_kind": "qcompile.runtime.kinds",
    "register_runtime_task": "qcompile.runtime.tasks",
    "resolve_providers": "qcompile.runtime.engine",
    "score": "qcompile.runtime.scoring",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qcompile.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
