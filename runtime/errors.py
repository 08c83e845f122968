"""Errors from the deployment runtime, each saying what is wrong and how to fix it.

These mirror ``qcompile.errors.QCompileError`` (same ``message`` / ``hint`` / ``str`` format)
instead of importing it, because the runtime may import nothing from qcompile outside itself
except ``qcompile.version``: it has to stay installable and importable without torch.
"""

from __future__ import annotations


class RuntimeFailure(Exception):
    """Base class for runtime errors a user can act on. ``hint`` tells them how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHow to fix: {self.hint}"


class ArtifactError(RuntimeFailure):
    """The file is missing, is not an ONNX model, or its qcompile metadata is malformed."""


class InputError(RuntimeFailure, ValueError):
    """An input array does not match the model's input (dtype, rank or a fixed dimension)."""


class ProviderError(RuntimeFailure):
    """A requested onnxruntime execution provider is not available on this machine."""
