"""Quantization methods as plug-ins (see :mod:`qcompile.methods.base`)."""

from qcompile.methods.base import Method
from qcompile.methods.registry import PLANNED, available_methods, get_method, register_builtin, register_method

__all__ = ["Method", "PLANNED", "available_methods", "get_method", "register_builtin", "register_method"]
