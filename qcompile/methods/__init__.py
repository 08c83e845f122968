"""Quantization methods as plug-ins (see :mod:`qcompile.methods.base`). Importing this package is torch-free."""

from qcompile.methods.base import Method
from qcompile.methods.cli_options import CliOption, CliOptions
from qcompile.methods.registry import PLANNED, available_methods, cli_options, get_method, register_method

__all__ = ["CliOption", "CliOptions", "Method", "PLANNED", "available_methods", "cli_options", "get_method",
           "register_method"]
