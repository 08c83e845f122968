"""qcompile: a quantization compiler for PyTorch models.

Importing ``qcompile`` is cheap and torch-free, so that ``qcompile.runtime`` (onnxruntime + numpy
only) works on machines without torch. The torch-based API is loaded on first use.
"""

from __future__ import annotations

from qcompile.version import __version__

_LAZY = {
    "compile": ("qcompile.api", "compile"),
    "CompiledModel": ("qcompile.api", "CompiledModel"),
    "load_model": ("qcompile.loading", "load_model"),
    "QuantSpec": ("qcompile.plan", "QuantSpec"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'qcompile' has no attribute {name!r}")
