"""Errors a user can act on, and the runtime's own kinds of them.

:class:`ActionableError` is the one base of every user-facing error in qcompile, compiler and runtime
alike. It lives here, in the runtime (the distribution the compiler depends on, not the other way
round), and this module imports nothing, so the runtime installs and runs without torch.
"""

from __future__ import annotations


class ActionableError(Exception):
    """An error a user can act on: ``message`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHow to fix: {self.hint}"


class RuntimeFailure(ActionableError):
    """Base class of the runtime's errors."""


class ArtifactError(RuntimeFailure):
    """The file is missing, is not an ONNX model, or its qcompile metadata is malformed."""


class InputError(RuntimeFailure, ValueError):
    """An input array does not match the model's input (dtype, rank or a fixed dimension)."""


class OutputError(RuntimeFailure):
    """The model's outputs cannot be right (NaN/inf for finite inputs): never reported as a result."""


class ProviderError(RuntimeFailure):
    """A requested onnxruntime execution provider is not available on this machine."""


class TaskError(RuntimeFailure):
    """An unknown task name, or model outputs that the chosen task cannot score."""


class DataError(RuntimeFailure):
    """A data spec could not be resolved or the files are malformed (the compiler reads data the same way)."""


class MissingDependencyError(RuntimeFailure):
    """An optional package a feature needs is not installed (e.g. pillow for ``folder:`` data)."""


class ActionableWarning(ActionableError, UserWarning):
    """A hazard a user can act on that does not stop the work: ``message`` and ``hint``, issued with
    ``warnings.warn`` (the compiler's :class:`~qcompile.errors.QCompileWarning` is one too)."""


class UncheckedWarning(ActionableWarning):
    """The runtime was asked for a configuration whose parity with PyTorch nobody has measured (e.g. an
    ``ort-int8`` file on the CUDA provider, or on a CPU that is not x86): it runs, but unverified."""
