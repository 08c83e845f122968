"""``qcompile run`` and ``qcompile bench``: use an exported artifact with the torch-free runtime.

The work is the runtime's (:func:`qcompile.runtime.scoring.score`, :func:`qcompile.runtime.bench.benchmark`),
the same functions the deployment machine's ``qcompile-runtime run|bench`` call; these commands add
click options and rich rendering of the same rows. They import only the runtime, so a test runs them
with torch made unimportable. Keep it that way: no ``qcompile.api`` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.options import PROVIDERS, batch_sizes_option, data_option, normalization_options, providers_option
from qcompile.cli.output import Output, Result, reporting
from qcompile.runtime.cli import bench as runtime_bench
from qcompile.runtime.cli import run as runtime_run
from qcompile.runtime.cli.command import SPIN_HELP

spin_option = click.option("--spin/--no-spin", default=None, help=SPIN_HELP)
onnx_argument = click.argument("model", metavar="MODEL.onnx",
                               type=click.Path(exists=True, dir_okay=False, path_type=Path))


@click.command(help=runtime_run.SUMMARY)
@onnx_argument
@data_option(required=True, help="Dataset whose test split is scored.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True,
              help=runtime_run.BATCH_HELP)
@click.option("--task", default=None, metavar="NAME",
              help=f"{runtime_run.TASK_HELP} [default: the artifact's; classification if it records none]")
@normalization_options(runtime_run.NORM_HELP)
@providers_option
@spin_option
@reporting
def run(out: Output, model: Path, data: str, batch_size: int, task: str, norm: dict, providers: str,
        spin: bool | None) -> Result:
    from qcompile.runtime.normalisation import choose
    from qcompile.runtime.scoring import score

    report = score(model, data, batch_size=batch_size, providers=PROVIDERS[providers], task=task, spinning=spin,
                   normalization=choose(**norm), log=out.log)
    return Result(report, render_run)


@click.command(help=runtime_bench.SUMMARY)
@onnx_argument
@click.option("--reference", "-r", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=runtime_bench.REFERENCE_HELP)
@batch_sizes_option
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True, help=runtime_bench.REPEATS_HELP)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help=runtime_bench.WARMUP_HELP)
@providers_option
@spin_option
@reporting
def bench(out: Output, model: Path, reference: Path | None, batch_sizes: tuple[int, ...], repeats: int,
          warmup: int, providers: str, spin: bool | None) -> Result:
    from qcompile.runtime.bench import benchmark

    report = benchmark(model, reference, batch_sizes, repeats=repeats, warmup=warmup,
                       providers=PROVIDERS[providers], spinning=spin, log=out.log)
    return Result(report, render_bench)


def size_summary(path: Path) -> dict[str, Any]:
    """The runtime's :func:`~qcompile.runtime.bench.size_summary`, imported on use (it loads onnxruntime)."""
    from qcompile.runtime.bench import size_summary as summary

    return summary(path)


# ----------------------------------------------------------------------------- rendering
def render_run(console: Console, r: dict[str, Any]) -> None:
    console.print(fmt.key_values(*runtime_run.summary(r)))


def render_bench(console: Console, r: dict[str, Any]) -> None:
    columns, rows, notes = runtime_bench.rows(r)
    console.print(fmt.table(runtime_bench.TITLE, columns, rows, right=tuple(range(1, len(columns)))))
    for note in notes:
        console.print(f"  {note}", markup=False)
