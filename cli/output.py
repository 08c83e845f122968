"""How commands talk to the user: rich tables on stdout, or exactly one JSON document with ``--json``.

A command computes a plain dict and returns it as a :class:`Result` together with a renderer; the
``reporting`` decorator decides what reaches stdout. Under ``--json`` everything else a library might
print to stdout (the ONNX exporter's chatter, progress bars) is redirected to stderr while the command
runs, so ``qcompile ... --json | jq`` always parses. Errors are rendered here too, as a message plus
"How to fix: ...", because the fix is the part a user needs most.
"""

from __future__ import annotations

import contextlib
import os
import functools
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import click
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from qcompile.runtime.cli.text import count, dumps, error_document, error_text, jsonable, ms, nbytes, pct, ratio

__all__ = ["CliState", "Output", "Result", "count", "emit_json", "jsonable", "key_values", "ms", "nbytes", "pct",
           "ratio", "render_error", "reporting", "stderr_console", "stdout_console", "table"]


@dataclass
class CliState:
    """Per-invocation flags shared by the group and its commands (``ctx.obj``)."""

    debug: bool = False
    json: bool = False


@dataclass
class Output:
    """What a command may use to report while it works: progress only when a human is watching."""

    json: bool = False
    quiet: bool = False  # a data-parallel rank other than 0: rank 0 reports for the job

    @property
    def progress(self) -> bool:
        """Draw training progress bars? Never under ``--json`` (stdout belongs to the document)."""
        return not self.json and not self.quiet

    def log(self, message: str) -> None:
        """A one-line note about what is happening, on stderr so stdout stays clean."""
        if not self.quiet:
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
        out = Output(json=as_json, quiet=os.environ.get("RANK", "0") != "0")  # torchrun's rank, read without torch
        if out.quiet:  # errors still reach the error boundary; results are rank 0's to show
            func(out=out, **kwargs)
            return
        if not as_json:
            with shown_warnings():
                result = func(out=out, **kwargs)
            result.render(stdout_console(), result.data)
            return
        with contextlib.redirect_stdout(sys.stderr), shown_warnings() as caught:
            result = func(out=out, **kwargs)
        emit_json({"ok": True, **result.data, **({"warnings": caught} if caught else {})})

    return wrapper


@contextlib.contextmanager
def shown_warnings() -> Iterator[list[dict[str, Any]]]:
    """Show every :class:`~qcompile.runtime.errors.ActionableWarning` (the compiler's QCompileWarning, the
    runtime's UncheckedWarning) raised inside as "Warning: ... How to fix: ..."
    on stderr (each once), and collect them (``{"message", "hint"}``) for the JSON document. Other
    warnings are shown as Python shows them."""
    from qcompile.runtime.errors import ActionableWarning

    caught: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always", ActionableWarning)
        try:
            yield caught
        finally:
            console = stderr_console()
            for record in records:
                w = record.message
                if not isinstance(w, ActionableWarning):
                    warnings.showwarning(w, record.category, record.filename, record.lineno, record.file, record.line)
                elif {"message": w.message, "hint": w.hint} not in caught:
                    caught.append({"message": w.message, "hint": w.hint})
                    console.print(Text("Warning: ", style="bold yellow") + Text(w.message), soft_wrap=True)
                    if w.hint:
                        console.print(Text("How to fix: ", style="bold") + Text(w.hint), soft_wrap=True)


def emit_json(document: dict[str, Any]) -> None:
    click.echo(dumps(document))


# ----------------------------------------------------------------------------- errors
def render_error(exc: BaseException, *, expected: bool, debug: bool, as_json: bool) -> None:
    """Message and fix on stderr (plus an ``{"ok": false, ...}`` document on stdout under ``--json``)."""
    message, hint = error_text(exc, expected, "qcompile")
    console = stderr_console()
    if debug:
        console.print(Text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), style="dim"))
        if getattr(exc, "detail", None):  # e.g. the ONNX exporter's full log, kept out of the message
            console.print(Text(exc.detail, style="dim"))
    # soft_wrap: never break a path or a suggested command in the middle; the terminal wraps it
    console.print(Text("Error: ", style="bold red") + Text(message), soft_wrap=True)
    if hint:
        console.print(Text("How to fix: ", style="bold") + Text(hint), soft_wrap=True)
    if as_json:
        emit_json(error_document(exc, message, hint))


# ----------------------------------------------------------------------------- formatting
# numbers are formatted as the runtime's plain-text command line does (pct, count, nbytes, ratio, ms)
def table(title: str, columns: list[str], rows: list[list[Any]], right: tuple[int, ...] = (),
          show_header: bool = True, optional: tuple[int, ...] = ()) -> FittedTable:
    """A simple table; columns in ``right`` hold numbers (right-aligned). ``optional`` columns, least
    important first, are left out when the output is too narrow for them (see :class:`FittedTable`)."""
    return FittedTable(title, columns, [[str(cell) for cell in row] for row in rows], right, show_header, optional)


def key_values(title: str, pairs: list[tuple[str, Any]]) -> FittedTable:
    """A two-column table of labelled values (summaries)."""
    return table(title, ["", ""], [[k, v] for k, v in pairs], show_header=False)


class FittedTable:
    """A table that never cuts a number, however narrow the output (a pipe, a CI log, an 80-column terminal).

    Rules, applied when it is drawn and the width is known:
    1. text columns wrap (a word longer than its column is folded), numbers do not;
    2. while the table cannot fit even with its text wrapped (and words folded to ``FOLD_WIDTH``), the
       next ``optional`` column is left out, and a note under the table names the columns left out;
    3. if it still cannot fit, numbers fold onto a second line rather than being cropped.
    """

    def __init__(self, title: str, columns: list[str], rows: list[list[str]], right: tuple[int, ...],
                 show_header: bool, optional: tuple[int, ...]):
        self.title, self.columns, self.rows, self.right = title, columns, rows, right
        self.show_header, self.optional = show_header, optional

    FOLD_WIDTH = 12  # a text column is not narrowed below this for the sake of another column

    def build(self, shown: list[int], fold_numbers: bool = False, text_width: int | None = None) -> Table:
        t = Table(title=self.title, title_justify="left", title_style="bold", show_header=self.show_header,
                  box=box.SIMPLE_HEAD, pad_edge=False)
        for i in shown:
            number = i in self.right
            t.add_column(self.columns[i], justify="right" if number else "left", no_wrap=number and not fold_numbers,
                         overflow="fold", max_width=None if number else text_width)
        for row in self.rows:
            t.add_row(*(Text(row[i]) for i in shown))
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown, left_out = list(range(len(self.columns))), []
        for column in self.optional:
            if self._narrowest(console, options, shown) <= options.max_width:
                break
            shown.remove(column)
            left_out.append(self.columns[column])
        yield self.build(shown, fold_numbers=self._narrowest(console, options, shown) > options.max_width)
        if left_out:
            yield Text(f"not shown at this width: {', '.join(left_out)} (widen the output, or use --json)", style="dim")

    def _narrowest(self, console: Console, options: ConsoleOptions, shown: list[int]) -> int:
        """The least width the ``shown`` columns fit in with whole numbers (``Measurement.get`` would clamp
        it to the width at hand, hence the wide options)."""
        table = self.build(shown, text_width=self.FOLD_WIDTH)
        return Measurement.get(console, options.update_width(1 << 16), table).minimum

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.build(list(range(len(self.columns)))))
