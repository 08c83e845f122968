"""Errors from the deployment runtime, each saying what is wrong and how to fix it.

:class:`~qcompile.errors.ActionableError` is the one base of every user-facing error in qcompile;
``qcompile.errors`` imports nothing, so the runtime can share it and still run without torch.
"""

from __future__ import annotations

from qcompile.errors import ActionableError


class RuntimeFailure(ActionableError):
    """Base class of the runtime's errors."""


class ArtifactError(RuntimeFailure):
    """The file is missing, is not an ONNX model, or its qcompile metadata is malformed."""


class InputError(RuntimeFailure, ValueError):
    """An input array does not match the model's input (dtype, rank or a fixed dimension)."""


class ProviderError(RuntimeFailure):
    """A requested onnxruntime execution provider is not available on this machine."""
