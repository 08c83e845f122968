"""The ``qcompile`` click group and the error boundary every command runs inside.

Exit codes: 0 success; 2 for errors the user can fix (any ``QCompileError`` or runtime error, and
click's own usage errors), printed as a message plus "How to fix: ..." with no traceback; 1 for
anything unexpected (a bug), with the traceback only under ``--debug`` (or ``QCOMPILE_DEBUG=1``).
"""

from __future__ import annotations

import os

import click

from qcompile.cli.commands.codec_train import codec_group
from qcompile.cli.commands.demo import demo
from qcompile.cli.commands.inspection import inspect
from qcompile.cli.commands.pipeline import compile_command, export, finetune
from qcompile.cli.commands.report import report
from qcompile.cli.commands.runtime import bench, run
from qcompile.cli.commands.synthesize import synthesize
from qcompile.cli.output import CliState, render_error
from qcompile.errors import ActionableError
from qcompile.version import __version__

EXIT_USER_ERROR = 2
EXIT_BUG = 1


def is_user_error(exc: BaseException) -> bool:
    """Compiler and runtime errors share :class:`ActionableError`: a message and a fix."""
    return isinstance(exc, ActionableError)


class QCompileGroup(click.Group):
    """A click group that turns exceptions from commands into a message, a fix and an exit code."""

    def invoke(self, ctx: click.Context):
        # An option's value can be refused while click parses it, before the command has read --json.
        ctx.meta["qcompile.argv"] = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # the command and its args
        json_requested = "--json" in ctx.meta["qcompile.argv"]
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            state = ctx.find_object(CliState) or CliState()
            expected = is_user_error(exc)
            render_error(exc, expected=expected, debug=state.debug, as_json=state.json or json_requested)
            ctx.exit(EXIT_USER_ERROR if expected else EXIT_BUG)


@click.group(cls=QCompileGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="qcompile")
@click.option("--debug", is_flag=True, default=lambda: os.environ.get("QCOMPILE_DEBUG", "") not in ("", "0"),
              help="Show full tracebacks on errors (also: QCOMPILE_DEBUG=1).")
@click.option("--dist-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              metavar="SECONDS", help="Under torchrun: how long a collective waits for the other ranks before the job "
              "fails with an error (a dead rank must not hang the others).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Run the command data-parallel on N local processes (torchrun --standalone --nproc-per-node N); "
              "on CPU an unset OMP_NUM_THREADS becomes cores / N.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, dist_timeout: float, nproc: int) -> None:
    """qcompile: trace a PyTorch model, quantize it, finetune, export packed low-bit ONNX, run it.

    \b
    Quick start (no data files needed):
      qcompile demo
    Typical flow:
      qcompile inspect model.py:build --weights w.pt --input-shape 1,1,28,28
      qcompile synthesize model.py:build --weights w.pt --input-shape 1,1,28,28 --out pool.npz
      qcompile compile model.py:build --weights w.pt --input-shape 1,1,28,28 \\
          --w-bits 4 --a-bits 8 --data mnist:DIR --epochs 2 --out m.onnx
      qcompile run m.onnx --data mnist:DIR
      qcompile bench m.onnx --reference fp32.onnx
      qcompile report runs/seed* --out curves.png
      qcompile codec compress photo.png -o photo.qc

    Every command takes --json (one JSON document on stdout) and --help.
    """
    ctx.obj = CliState(debug=debug)
    argv = ctx.meta.get("qcompile.argv", [])
    if nproc > 1 and not {"--help", "-h"} & set(argv):  # help is read here, not on N ranks
        ctx.exit(launch(nproc, [*(["--debug"] if debug else []), "--dist-timeout", str(dist_timeout), *argv]))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun with several ranks
        from qcompile import distributed

        note = distributed.split_threads()  # before any parallel work picks its thread count
        if note and os.environ.get("RANK", "0") == "0":
            click.echo(note, err=True)
        distributed.setup(dist_timeout)
        ctx.call_on_close(distributed.teardown)


for command in (demo, inspect, synthesize, compile_command, finetune, export, run, bench, report, codec_group()):
    cli.add_command(command)


def launch(nproc: int, argv: list[str]) -> int:
    """``qcompile --nproc N ARGS``: run ``qcompile ARGS`` under torchrun on N local ranks; its exit code."""
    import subprocess

    from qcompile import distributed

    command, env, note = distributed.launch_command(nproc, argv)
    if note:
        click.echo(note, err=True)
    return subprocess.run(command, env=env).returncode


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``qcompile = qcompile.cli.main:main``)."""
    cli.main(args=argv, prog_name="qcompile")


if __name__ == "__main__":
    main()
