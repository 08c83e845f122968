"""Errors a user can act on: every one says what is wrong and how to fix it."""

from __future__ import annotations


class ActionableError(Exception):
    """An error a user can act on: ``message`` says what is wrong, ``hint`` how to fix it.

    The base of both the compiler's errors and the torch-free runtime's (this module imports nothing).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHow to fix: {self.hint}"


class QCompileError(ActionableError):
    """Base class for the compiler's user-facing errors (``message`` + ``hint``, see ActionableError)."""


class ModelLoadError(QCompileError):
    """The model spec, factory or state dict could not be loaded."""


class TraceFailure(QCompileError):
    """torch.fx could not trace the model (data-dependent control flow, etc.)."""


class ConfigError(QCompileError):
    """An option or combination of options is invalid."""


class DataError(QCompileError):
    """A data spec could not be resolved or the files are malformed."""


class ExportError(QCompileError):
    """The model cannot be exported exactly (e.g. a range was never calibrated)."""
