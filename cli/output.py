"""How commands talk to the user: rich tables on stdout, or exactly one JSON document with ``--json``.

A command computes a plain dict and returns it as a :class:`Result` together with a renderer; the
``reporting`` decorator decides what reaches stdout. Under ``--json`` everything else a library might
print to stdout (the ONNX exporter's chatter, progress bars) is redirected to stderr while the command
runs, so ``qcompile ... --json | jq`` always parses. Errors are rendered here too, as a message plus
"How to fix: ...", because the fix is the part a user needs most.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


@dataclass
class CliState:
    """Per-invocation flags shared by the group and its commands (``ctx.obj``)."""

    debug: bool = False
    json: bool = False


@dataclass
class Output:
    """What a command may use to report while it works: progress only when a human is watching."""

    json: bool = False

    @property
    def progress(self) -> bool:
        """Draw training progress bars? Never under ``--json`` (stdout belongs to the document)."""
        return not self.json

    def log(self, message: str) -> None:
        """A one-line note about what is happening, on stderr so stdout stays clean."""
        stderr_console().print(Text(message, style="dim"))


@dataclass
class Result:
    """A command's answer: ``data`` (JSON-able) and how to draw it for a terminal."""

    data: dict[str, Any]
    render: Callable[[Console, dict[str, Any]], None] = field(repr=False)


def stdout_console() -> Console:
    # Built per call: click's test runner swaps sys.stdout, and a console bound at import would miss it.
    return Console(file=sys.stdout, highlight=False)


def stderr_console() -> Console:
    return Console(file=sys.stderr, highlight=False)


def reporting(func: Callable[..., Result]) -> Callable[..., None]:
    """Decorator for a command returning a :class:`Result`: adds ``--json`` and passes ``out: Output``."""

    @click.option("--json", "as_json", is_flag=True,
                  help="Print exactly one JSON document on stdout (no tables, no progress bars).")
    @functools.wraps(func)
    def wrapper(as_json: bool, **kwargs: Any) -> None:
        state = click.get_current_context().find_object(CliState)
        if state is not None:
            state.json = as_json
        out = Output(json=as_json)
        if not as_json:
            result = func(out=out, **kwargs)
            result.render(stdout_console(), result.data)
            return
        with contextlib.redirect_stdout(sys.stderr):
            result = func(out=out, **kwargs)
        emit_json({"ok": True, **result.data})

    return wrapper


def emit_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(jsonable(document), indent=2))


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


# ----------------------------------------------------------------------------- errors
def render_error(exc: BaseException, *, expected: bool, debug: bool, as_json: bool) -> None:
    """Message and fix on stderr (plus an ``{"ok": false, ...}`` document on stdout under ``--json``)."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    if not expected:
        message = f"unexpected {type(exc).__name__}: {message}"
        hint = hint or "this is a bug in qcompile or a dependency; rerun with `qcompile --debug ...` and report the traceback"
    console = stderr_console()
    if debug:
        console.print(Text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), style="dim"))
    # soft_wrap: never break a path or a suggested command in the middle; the terminal wraps it
    console.print(Text("Error: ", style="bold red") + Text(message), soft_wrap=True)
    if hint:
        console.print(Text("How to fix: ", style="bold") + Text(hint), soft_wrap=True)
    if as_json:
        emit_json({"ok": False, "error": {"type": type(exc).__name__, "message": message, "hint": hint}})


# ----------------------------------------------------------------------------- formatting
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


def table(title: str, columns: list[str], rows: list[list[Any]], right: tuple[int, ...] = (),
          show_header: bool = True) -> Table:
    """A simple table; columns in ``right`` hold numbers (right-aligned, never wrapped). Of the others
    only the last wraps: it is the free text in every table here."""
    t = Table(title=title, title_justify="left", title_style="bold", show_header=show_header, box=box.SIMPLE_HEAD,
              pad_edge=False)
    for i, name in enumerate(columns):
        t.add_column(name, justify="right" if i in right else "left", no_wrap=i in right or i < len(columns) - 1,
                     overflow="fold")
    for row in rows:
        t.add_row(*(Text(str(cell)) for cell in row))
    return t


def key_values(title: str, pairs: list[tuple[str, Any]]) -> Table:
    """A two-column table of labelled values (summaries)."""
    return table(title, ["", ""], [[k, v] for k, v in pairs], show_header=False)
