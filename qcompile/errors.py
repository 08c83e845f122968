"""The compiler's errors a user can act on: every one says what is wrong and how to fix it.

They share :class:`ActionableError` (defined in the torch-free runtime, which the compiler depends on)
with the runtime's errors, so the CLI treats both alike. :class:`QCompileWarning` is the same for a
hazard that does not stop the work: a Python warning in the API, a visible line on the command line.
:class:`DataError` is the runtime's (its data loaders raise it) and is re-exported here, the compiler's
import path for it.
"""

from __future__ import annotations

from qcompile.runtime.errors import ActionableError, ActionableWarning, DataError

__all__ = ["ActionableError", "ConfigError", "DataError", "ExportError", "IntegerKernelError", "ModelLoadError", "QCompileError",
           "QCompileWarning", "TraceFailure", "TrainingDiverged"]


class QCompileError(ActionableError):
    """Base class for the compiler's user-facing errors (``message`` + ``hint``, see ActionableError)."""


class ModelLoadError(QCompileError):
    """The model spec, factory or state dict could not be loaded."""


class TraceFailure(QCompileError):
    """torch.fx could not trace the model (data-dependent control flow, etc.)."""


class ConfigError(QCompileError):
    """An option or combination of options is invalid."""


class IntegerKernelError(ConfigError):
    """The integer-kernel pass (``--target ort-int8``) met a graph it cannot lower; ``auto`` compiles such a
    model ``exact`` instead."""


class ExportError(QCompileError):
    """The model cannot be exported exactly (e.g. a range was never calibrated). ``detail``: the exporter's
    full text, which the command line shows under ``--debug`` only."""

    def __init__(self, message: str, hint: str | None = None, detail: str | None = None):
        super().__init__(message, hint)
        self.detail = detail


class TrainingDiverged(QCompileError):
    """Training produced a non-finite loss or non-finite weights, and was stopped before saving them."""


class RunDirError(QCompileError):
    """A run directory is missing, damaged, unfinished or being written by another command."""


class QCompileWarning(ActionableWarning):
    """A hazard a user can act on that does not stop the work: ``message`` and ``hint`` as in every
    :class:`ActionableError`, issued with ``warnings.warn``."""
