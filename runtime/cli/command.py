"""One ``qcompile-runtime`` subcommand, and the argument types and choices the command lines share.

A :class:`Subcommand` is data: its name and summary, a function that declares its arguments, one that
does the work (returning a plain dict) and one that renders that dict as text. ``main`` adds ``--json``
and the error handling to every one, so a new torch-free command (a codec's ``decompress``, dynamic
dispatch) is one module and one line in :data:`qcompile.runtime.cli.main.SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qcompile.runtime.errors import ActionableError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# --providers choices of both command lines -> what Session takes ("cuda" keeps CPU for ops CUDA lacks)
PROVIDERS = {"auto": "auto", "cpu": [CPU], "cuda": [CUDA, CPU]}
PROVIDERS_HELP = ("onnxruntime execution provider: auto picks CUDA when onnxruntime-gpu and a GPU are present "
                  "(an ort-int8 file stays on the CPU, where its parity was checked).")
SPIN_HELP = ("Let onnxruntime's worker threads busy-wait between kernels. Default: the runtime's (off; spinning "
             "was slower on a machine whose cores do other work too, see docs/BENCHMARKS.md).")
DATA_FORMS = "digits | mnist:DIR | folder:DIR[?size=N] | npz:FILE"


class UsageError(ActionableError):
    """The command line itself is wrong (unknown option, bad value): exit 2, like every user error."""


@dataclass(frozen=True)
class Subcommand:
    """``add_arguments(parser)`` declares the arguments; ``execute(args, log)`` returns the report (a plain
    dict, printed as JSON under ``--json``); ``render(report)`` turns it into text for a terminal.
    ``log`` prints a progress line on stderr, so stdout keeps only the report."""

    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    execute: Callable[[argparse.Namespace, Callable[[str], None]], dict[str, Any]]
    render: Callable[[dict[str, Any]], str]


def parse_int_list(text: str) -> tuple[int, ...]:
    """``"1,64"`` → ``(1, 64)``; ``ValueError`` with the fix unless every item is a positive integer."""
    message = f"{text!r}: write comma-separated positive integers, e.g. 1,64"
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(message) from None
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(message)
    return sizes


def int_list(text: str) -> tuple[int, ...]:
    """argparse type for ``--batch-sizes 1,64``."""
    try:
        return parse_int_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    convert.__name__ = f"integer >= {minimum}"
    return convert


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="An exported model (a qcompile artifact or plain ONNX).")


def add_providers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--providers", choices=sorted(PROVIDERS), default="auto",
                        help=f"{PROVIDERS_HELP} (default: auto)")


def add_spin_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spin", action=argparse.BooleanOptionalAction, default=None, help=SPIN_HELP)


def add_normalization_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """``--norm NAME`` or ``--mean/--std`` (checked by :func:`qcompile.runtime.normalisation.choose`)."""
    from qcompile.runtime.normalisation import CHOICES

    parser.add_argument("--norm", type=str.lower, choices=CHOICES, default=None,
                        help=f"{purpose} A preset ({', '.join(CHOICES[:-1])}; none = images in [0, 1] as they are) "
                             "or 'data': the training split's per-channel statistics.")
    parser.add_argument("--mean", metavar="M[,M...]", default=None,
                        help="Per-channel input mean (one value, or one per channel), with --std; instead of --norm.")
    parser.add_argument("--std", metavar="S[,S...]", default=None, help="Per-channel input std, with --mean.")
