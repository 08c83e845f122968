"""Methods registered by name, plus the ones announced but not built (so users get a clear answer).

A built-in method is imported on first use (it imports torch). Its command-line options live in a
torch-free module that :func:`cli_options` reads without importing the method, so ``--help`` stays
fast. A plug-in defined elsewhere registers its class with :func:`register_method` (its
``cli_options`` are then read from the class).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qcompile.errors import ConfigError
from qcompile.methods.cli_options import CliOptions

if TYPE_CHECKING:
    from qcompile.methods.base import Method


@dataclass(frozen=True)
class Builtin:
    """Where a built-in method lives: ``module`` registers its :class:`Method` when imported;
    ``cli_options`` ('module:attribute') is its :class:`CliOptions`, readable without ``module``."""

    module: str
    cli_options: str = ""


_REGISTRY: dict[str, type[Method]] = {}
_BUILTIN = {
    "ste": Builtin("qcompile.methods.ste"),
    "metaquant": Builtin("qcompile.methods.metaquant.method", "qcompile.methods.metaquant.options:CLI_OPTIONS"),
    "universal": Builtin("qcompile.methods.universal.method", "qcompile.methods.universal.options:CLI_OPTIONS"),
    "dynadfq": Builtin("qcompile.methods.dynadfq.method", "qcompile.methods.dynadfq.options:CLI_OPTIONS"),
}
PLANNED: dict[str, str] = {}  # name -> what it will be: named in errors until it is built


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def cli_options(name: str) -> CliOptions:
    """The command-line options of method ``name`` (an available one), without importing a built-in."""
    if name in _REGISTRY:
        return _REGISTRY[name].cli_options
    if name not in _BUILTIN:
        raise ConfigError(f"unknown method {name!r}", hint=f"use one of: {', '.join(available_methods())}")
    if not _BUILTIN[name].cli_options:
        return CliOptions()
    module, _, attribute = _BUILTIN[name].cli_options.partition(":")
    return getattr(importlib.import_module(module), attribute)


def get_method(name: str, options: dict | None = None) -> Method:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name].module)
    if name in _REGISTRY:
        return _REGISTRY[name](options)
    if name in PLANNED:
        raise ConfigError(f"method {name!r} ({PLANNED[name]}) is planned but not available in this version",
                          hint=f"use one of: {', '.join(available_methods())}")
    raise ConfigError(f"unknown method {name!r}", hint=f"use one of: {', '.join(available_methods())}")
