"""Small checks for option validation, shared by every config (training, method plug-ins)."""

from __future__ import annotations

import math
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
    """A finite int or float, not a bool: ``inf`` and ``nan`` pass every ``>``/``<`` bound check the
    wrong way (``nan > 0`` is False, ``inf > 0`` is True), so a rate or weight that is not finite is
    refused here, once, instead of at each bound."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
