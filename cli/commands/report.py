"""``qcompile report``: accuracy-vs-epoch curves of several runs in one PNG, and their summary table.

Thin on purpose: reading, grouping, statistics and the figure live in :mod:`qcompile.report`, where
benchmark scripts use them too. This module turns flags into calls and the summary into a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.output import Output, Result, reporting


@click.command()
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write (atomically) [default: no figure, the summary only].")
@click.option("--metric", "-m", default="test_acc", show_default=True, metavar="NAME",
              help="Epoch metric (test_acc, train_acc, train_loss, test_loss, lr, ...) or per-step metric "
                   "(meta_loss, meta_gain, meta_grad_norm, ...: plotted against the step).")
@click.option("--last-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Summarise the mean ± std of the last K epochs (pooled over the runs of a label).")
@click.option("--group-by", type=click.Choice(["label", "parent", "run"]), default="label", show_default=True,
              help="Runs sharing a curve: the label in history.json (seeds of one configuration), the run "
                   "directory's parent folder, or none (one curve per run).")
@click.option("--title", default=None, help="Figure title [default: the metric].")
@reporting
def report(out: Output, run_dirs: tuple[Path, ...], out_path: Path | None, metric: str, last_k: int, group_by: str,
           title: str | None) -> Result:
    """Plot METRIC against the epoch for each RUN_DIR (by `compile`/`finetune`), seeds averaged.

    \b
    Each label's curve is the mean over its runs, shaded from min to max; the summary gives per
    label: runs, final value (mean ± std over runs), mean ± std over the last K epochs, and best.
      qcompile report runs/ste-s* runs/mq-s* --out curves.png
      qcompile report runs/mq-s0 --metric meta_gain --out gain.png
    """
    from qcompile.errors import ConfigError
    from qcompile.report import group_runs, plot_curves, read_run, series_of, summarise

    if out_path is not None and out_path.suffix.lower() != ".png":
        raise ConfigError(f"output {out_path} does not end in .png", hint="name the figure e.g. curves.png")
    groups = series_of(group_runs([read_run(p) for p in run_dirs], group_by), metric)
    rows = summarise(groups, metric, last_k)
    if out_path is not None:
        out.log(f"drawing {metric} of {len(run_dirs)} run(s) to {out_path}")
        plot_curves(groups, out_path, metric, title)
    return Result({"metric": metric, "last_k": last_k, "group_by": group_by, "out": out_path, "groups": rows},
                  render_report)


def _stat(value: dict[str, Any], scale: float) -> str:
    if value["mean"] is None:
        return "—"
    return f"{scale * value['mean']:.2f} ± {scale * value['std']:.2f}" if scale != 1 else \
        f"{value['mean']:.4g} ± {value['std']:.2g}"


def render_report(console: Console, r: dict[str, Any]) -> None:
    """Numbers first and the label last: labels are long, and wrap under the numbers they follow."""
    scale, unit = (100.0, " (%)") if r["metric"].endswith("acc") else (1.0, "")
    rows = [[g["runs"], _stat(g["final"], scale), _stat(g["last_k"], scale), _stat(g["best"], scale), g["label"]]
            for g in r["groups"]]
    console.print(fmt.table(f"{r['metric']}{unit} per {r['group_by']}: mean ± std",
                            ["runs", "final", f"last {r['last_k']}", "best", r["group_by"]], rows, right=(0, 1, 2, 3)))
    if r["out"] is not None:
        console.print(f"curves: {r['out']}", markup=False)
