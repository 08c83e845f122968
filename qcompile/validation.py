"""Small checks for option validation, shared by every config (training, method plug-ins)."""

from __future__ import annotations

from typing import Any

from qcompile.errors import ConfigError


def require(ok: bool, message: str, hint: str) -> None:
    """Raise a :class:`ConfigError` with ``hint`` unless ``ok``."""
    if not ok:
        raise ConfigError(message, hint=hint)


def is_int(v: Any) -> bool:
    """An int that is not a bool (``True`` is not a batch size)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
