"""The ``qcompile-runtime`` entry point: parse, run one subcommand, print text or JSON, map errors to exit codes.

Exit codes match the compiler's ``qcompile``: 0 success; 2 for errors the user can fix (any
``ActionableError`` and command-line mistakes), printed as a message plus "How to fix: ..." with no
traceback; 1 for anything unexpected (a bug), with the traceback only under ``--debug`` (or
``QCOMPILE_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from qcompile.runtime.cli import bench, codec, run
from qcompile.runtime.cli.command import Subcommand, UsageError
from qcompile.runtime.cli.text import dumps, print_error
from qcompile.runtime.errors import ActionableError
from qcompile.runtime.version import __version__

PROG = "qcompile-runtime"
EXIT_OK, EXIT_BUG, EXIT_USER_ERROR = 0, 1, 2
SUBCOMMANDS: tuple[Subcommand, ...] = (run.COMMAND, bench.COMMAND, codec.COMMAND)  # every subcommand, registered here
DESCRIPTION = f"""\
{PROG}: run and benchmark qcompile artifacts with onnxruntime (no torch needed).

examples:
  {PROG} run model.onnx --data mnist:DIR
  {PROG} bench model.onnx --reference fp32.onnx --json
  {PROG} codec compress photo.png -o photo.qc
  {PROG} codec decompress photo.qc -o decoded.png

Every command takes --json (one JSON document on stdout) and --help."""


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are user errors: exit 2 with the fix, like every other command-line mistake."""

    def error(self, message: str):
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors (also: QCOMPILE_DEBUG=1).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in SUBCOMMANDS:
        sub = commands.add_parser(command.name, help=command.summary, description=command.summary)
        command.add_arguments(sub)
        sub.add_argument("--json", action="store_true",
                         help="Print exactly one JSON document on stdout (no tables, no progress lines).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``qcompile-runtime = qcompile.runtime.cli.main:main``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # known before parsing, so that a usage error is reported in the form that was asked for
    as_json = "--json" in argv
    debug = "--debug" in argv or os.environ.get("QCOMPILE_DEBUG", "") not in ("", "0")
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USER_ERROR
        command = next(c for c in SUBCOMMANDS if c.name == args.command)
        if not args.json:
            print(command.render(command.execute(args, log)))
            return EXIT_OK
        with contextlib.redirect_stdout(sys.stderr):  # stdout belongs to the one JSON document
            report = command.execute(args, log)
        print(dumps({"ok": True, **report}))
        return EXIT_OK
    except Exception as exc:
        expected = isinstance(exc, ActionableError)
        print_error(exc, expected=expected, debug=debug, as_json=as_json, prog=PROG)
        return EXIT_USER_ERROR if expected else EXIT_BUG


def log(message: str) -> None:
    """A progress line on stderr (stdout holds only the report)."""
    print(message, file=sys.stderr, flush=True)
