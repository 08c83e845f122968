"""Methods registered by name, plus the ones announced but not built (so users get a clear answer)."""

from __future__ import annotations

import importlib

from qcompile.errors import ConfigError
from qcompile.methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}
# name -> module that registers it when imported (keeps `import qcompile.methods` cheap)
_BUILTIN = {"ste": "qcompile.methods.ste", "metaquant": "qcompile.methods.metaquant"}
PLANNED = {
    "universal": "universal quantization (subtractive dither, soft rounding)",
    "dynadfq": "DynaDFQ (data-free synthesis + per-image bit selector)",
}


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def register_builtin(name: str, module: str) -> None:
    """Declare a built-in method whose module registers it on import."""
    _BUILTIN[name] = module
    PLANNED.pop(name, None)


def available_methods() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def get_method(name: str, options: dict | None = None) -> Method:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name in _REGISTRY:
        return _REGISTRY[name](options)
    if name in PLANNED:
        raise ConfigError(f"method {name!r} ({PLANNED[name]}) is planned but not available in this version",
                          hint=f"use one of: {', '.join(available_methods())}")
    raise ConfigError(f"unknown method {name!r}", hint=f"use one of: {', '.join(available_methods())}")
