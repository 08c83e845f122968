"""How the runtime's commands print: plain-text numbers and tables, one JSON document, errors with a fix.

The compiler's rich command line formats numbers with the same functions (``qcompile.cli.output``
re-exports them), so both command lines write a size or a latency alike.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def nbytes(value: int | float | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024 or unit == "MiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(value)


def ratio(value: float | None, suffix: str = "×") -> str:
    return "—" if value is None else f"{value:.2f}{suffix}"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def quotient(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is unknown (e.g. a bound not computed) or ``b`` is 0."""
    return None if a is None or b is None or b == 0 else a / b


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, paths as strings, NaN/inf as null (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def dumps(document: dict[str, Any]) -> str:
    """The one JSON document a ``--json`` command prints."""
    return json.dumps(jsonable(document), indent=2)


def error_text(exc: BaseException, expected: bool, prog: str) -> tuple[str, str | None]:
    """``(message, hint)`` for an error; an unexpected one is labelled a bug and says how to report it."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    if not expected:
        message = f"unexpected {type(exc).__name__}: {message}"
        hint = hint or (f"this is a bug in qcompile or a dependency; rerun with `{prog} --debug ...` "
                        "and report the traceback")
    return message, hint


def print_error(exc: BaseException, *, expected: bool, debug: bool, as_json: bool, prog: str) -> None:
    """Message and fix on stderr (plus an ``{"ok": false, ...}`` document on stdout under ``--json``)."""
    message, hint = error_text(exc, expected, prog)
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"Error: {message}", file=sys.stderr)
    if hint:
        print(f"How to fix: {hint}", file=sys.stderr)
    if as_json:
        print(dumps(error_document(exc, message, hint)))


def error_document(exc: BaseException, message: str, hint: str | None) -> dict[str, Any]:
    return {"ok": False, "error": {"type": type(exc).__name__, "message": message, "hint": hint}}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """A plain-text table: a title line, a header (omitted when every column name is empty), aligned rows.

    Columns in ``right`` hold numbers and are right-aligned. Nothing is cut: a wide cell widens its column.
    """
    cells = [[str(c) for c in row] for row in rows]
    header = [str(c) for c in columns]
    shown = [header, *cells] if any(header) else cells
    widths = [max(len(row[i]) for row in shown) for i in range(len(header))]

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return ("  " + "  ".join(parts)).rstrip()

    return "\n".join([title, *(line(row) for row in shown)])


def key_values(title: str, pairs: Sequence[tuple[str, Any]]) -> str:
    """A two-column table of labelled values (summaries)."""
    return table(title, ["", ""], [[k, v] for k, v in pairs])
