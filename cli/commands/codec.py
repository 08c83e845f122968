"""``qcompile codec``: the learned image codec's command group, and its torch-free commands.

``compress``, ``decompress`` and ``eval`` are the runtime's (:mod:`qcompile.runtime.cli.codec` and the
functions it calls), with click options and rich rendering of the same rows, so they work where
only ``qcompile-runtime`` is installed too (``qcompile-runtime codec ...``). They import no torch.

The seam for the compiler's codec commands (``train``, ``export``): they live in their own module
(``cli/commands/codec_train.py``), which imports :data:`codec` from here and registers its commands
with ``codec.add_command(...)``; ``cli/main.py`` adds the group to ``qcompile`` once. Keep training
out of this module: it must stay importable without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.options import PROVIDERS, int_list_option, providers_option
from qcompile.cli.output import Output, Result, reporting
from qcompile.runtime.cli import codec as runtime_codec

model_option = click.option("--model", "-m", default=None, metavar="M", help=runtime_codec.MODEL_HELP)
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, help=runtime_codec.THREADS_HELP)


def _options(providers: str, threads: int | None) -> dict[str, Any]:
    return {"providers": PROVIDERS[providers], "intra_op_threads": threads}


@click.group(help=runtime_codec.SUMMARY)
def codec() -> None:
    """The ``qcompile codec`` group (compiler commands register onto it; see the module docstring)."""


@codec.command(help=runtime_codec.COMPRESS_SUMMARY)
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="OUT.qc", help="Where to write the .qc file.")
@model_option
@providers_option
@threads_option
@reporting
def compress(out: Output, image: Path, out_path: Path, model: str | None, providers: str,
             threads: int | None) -> Result:
    from qcompile.runtime.codec.actions import compress_file

    report = compress_file(image, out_path, model, log=out.log, **_options(providers, threads))
    return Result(report, render_file)


@codec.command(help=runtime_codec.DECOMPRESS_SUMMARY)
@click.argument("file", metavar="IN.qc", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="OUT.png", help="Where to write the PNG.")
@model_option
@providers_option
@threads_option
@reporting
def decompress(out: Output, file: Path, out_path: Path, model: str | None, providers: str,
               threads: int | None) -> Result:
    from qcompile.runtime.codec.actions import decompress_file

    report = decompress_file(file, out_path, model, log=out.log, **_options(providers, threads))
    return Result(report, render_file)


@codec.command("eval", help=runtime_codec.EVAL_SUMMARY)
@click.option("--data", "-d", required=True, type=click.Path(file_okay=False, path_type=Path),
              help=runtime_codec.DATA_HELP)
@click.option("--model", "-m", "models", multiple=True, metavar="M", help=runtime_codec.EVAL_MODEL_HELP)
@click.option("--jpeg-qualities", callback=int_list_option, default=None, metavar="Q[,Q...]",
              help=f"{runtime_codec.JPEG_HELP} [default: 10,20,...,90]")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="RD.png",
              help=runtime_codec.PLOT_HELP)
@click.option("--ms-ssim/--no-ms-ssim", default=True, show_default=True, help=runtime_codec.MS_SSIM_HELP)
@providers_option
@threads_option
@reporting
def evaluate(out: Output, data: Path, models: tuple[str, ...], jpeg_qualities, plot: Path | None, ms_ssim: bool,
             providers: str, threads: int | None) -> Result:
    report = runtime_codec.run_eval(str(data), list(models) or None, jpeg_qualities, plot, ms_ssim,
                                    _options(providers, threads), out.log)
    return Result(report, render_eval)


# ----------------------------------------------------------------------------- rendering
def render_file(console: Console, r: dict[str, Any]) -> None:
    title, pairs = runtime_codec.file_summary(r)
    console.print(fmt.key_values(title, pairs))


def render_eval(console: Console, r: dict[str, Any]) -> None:
    for title, columns, rows in runtime_codec.eval_rows(r):
        right = tuple(range(2, len(columns))) if "bpp" in columns else (2,)
        console.print(fmt.table(title, columns, rows, right=right))
    if r.get("plot"):
        console.print(f"  plot: {r['plot']}", markup=False)
