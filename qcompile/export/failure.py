"""Why ``torch.onnx.export`` failed, in a few lines: the module, the user's source line, and the fix.

The exporter's own failure text is written for PyTorch developers: dozens of lines of graph dumps,
terminal colour codes and advice to file PyTorch issues. The usual cause in a traced-and-quantized
model is a ``--leaf`` module whose ``forward`` branches on tensor values, which ``torch.export`` cannot
capture. This module finds the user's frame in the exception chain, names the module whose ``forward``
holds it, and keeps the whole text (colour codes removed) as the error's ``detail``, which the command
line prints under ``--debug`` only.
"""

from __future__ import annotations

import inspect
import linecache
import re

from torch import nn

from qcompile.errors import ExportError
from qcompile.passes.trace import user_frame

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CALL = re.compile(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+)')
_SUMMARY = re.compile(r"## Exception summary\s*\n\s*(.+)")
COND_HINT = ("torch.export cannot follow a Python `if` on tensor values: write the branch with "
             "torch.cond(pred, true_fn, false_fn, (x,)) or torch.where, or move it out of the model; "
             "rerun with --debug for the exporter's full log")
DEBUG_HINT = "check that the model runs in eval mode on the example inputs; rerun with --debug for the exporter's full log"


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def explain_export_failure(exc: BaseException, log: str, model: nn.Module) -> ExportError:
    """An :class:`ExportError` for ``exc`` raised while exporting ``model``: one-line cause, where in the
    user's code, and which module; the exporter's full text as ``detail``."""
    chain = _chain(exc)
    detail = strip_ansi("\n\n".join(f"{type(e).__name__}: {e}" for e in chain) + ("\n\n" + log if log else ""))
    where = _user_location(chain, detail)
    data_dependent = any("DataDependent" in type(e).__name__ for e in chain) or "data-dependent" in detail
    cause = "data-dependent control flow" if data_dependent else _first_line(chain, detail)
    module = _module_at(model, where) if where else None
    subject = f"module '{module[0]}' ({module[1]})" if module else "the model"
    at = ""
    if where:
        code = linecache.getline(where[0], where[1]).strip()
        at = f" at {where[0]}:{where[1]}" + (f": `{code}`" if code else "")
    return ExportError(f"cannot export {subject} to ONNX: {cause}{at}",
                       hint=COND_HINT if data_dependent else DEBUG_HINT, detail=detail)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first (each once)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _user_location(chain: list[BaseException], text: str) -> tuple[str, int] | None:
    """The user's file and line: the deepest user frame of the innermost exception, else the exporter's
    "The following call raised this error" note."""
    for e in reversed(chain):
        frame = user_frame(e.__traceback__)
        if frame is not None and frame.lineno:
            return frame.filename, frame.lineno
    match = _CALL.search(text)
    return (match.group(1), int(match.group(2))) if match else None


def _first_line(chain: list[BaseException], text: str) -> str:
    match = _SUMMARY.search(text)
    line = match.group(1) if match else next((str(e).strip().splitlines()[0] for e in reversed(chain) if str(e).strip()),
                                            type(chain[-1]).__name__)
    return line.strip()[:300]


def _module_at(model: nn.Module, where: tuple[str, int]) -> tuple[str, str] | None:
    """The (qualified name, class) of the innermost submodule whose ``forward`` contains ``where``."""
    found = None
    for name, module in model.named_modules():
        forward = type(module).forward
        try:
            lines, first = inspect.getsourcelines(forward)
            file = inspect.getsourcefile(forward)
        except (OSError, TypeError):
            continue
        if file == where[0] and first <= where[1] < first + len(lines):
            found = (name or "<root>", type(module).__name__)  # later (deeper) matches win
    return found

