"""Torch-free deployment runtime: load a qcompile ``.onnx`` artifact and run it with onnxruntime.

Depends on onnxruntime and numpy only (and ``qcompile.version``), so it installs and imports on
machines without torch or onnx. ``Session(path).predict(x)`` is the main entry point.
"""

from __future__ import annotations

from qcompile.runtime.artifact import Artifact
from qcompile.runtime.bench import measure_latency
from qcompile.runtime.errors import ArtifactError, InputError, ProviderError, RuntimeFailure
from qcompile.runtime.session import Session, resolve_providers
from qcompile.version import __version__

__all__ = [
    "Artifact",
    "ArtifactError",
    "InputError",
    "ProviderError",
    "RuntimeFailure",
    "Session",
    "__version__",
    "measure_latency",
    "resolve_providers",
]
