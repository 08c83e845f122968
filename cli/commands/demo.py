"""``qcompile demo``: the whole spine on bundled data in under a minute (logic in :mod:`qcompile.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.output import Output, Result, reporting


@click.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("qcompile-demo"),
              show_default=True, help="Where the three ONNX files are written.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for init and data order.")
@reporting
def demo(out: Output, out_dir: Path, seed: int) -> Result:
    """Train a small BN CNN on scikit-learn digits, compile it at W4A8 and W1 (BWN), export, run in ORT.

    Needs no data files. Prints float and quantized accuracy in PyTorch and onnxruntime, the largest
    logit difference between them, ONNX sizes against fp32, and onnxruntime latencies.
    """
    from qcompile.demo import DemoConfig, run_demo

    return Result(run_demo(out_dir, DemoConfig(seed=seed), progress=out.progress, log=out.log), render_demo)


def render_demo(console: Console, r: dict[str, Any]) -> None:
    batches = r["config"]["latency_batches"]
    rows = [[row["name"], fmt.pct(row["acc_torch"]), fmt.pct(row["acc_ort"]), f"{row['max_abs_diff']:.0e}",
             fmt.nbytes(row["file_bytes"]), fmt.ratio(row["size_vs_fp32"]),
             *(f"{row['latency_ms'][b]:.3f}" for b in batches)] for row in r["rows"]]
    d = r["dataset"]
    console.print(fmt.table(
        f"qcompile demo: {d['name']} ({d['train']} train / {d['test']} test), "
        f"{r['model']['params']:,}-parameter BN CNN, {r['seconds']:.1f}s",
        ["model", "PyTorch", "ORT", "max|Δ|", "ONNX", "vs fp32", *(f"b={b} ms" for b in batches)],
        rows, right=tuple(range(1, 6 + len(batches)))))
    for row in r["rows"]:  # under the table: a target column would not fit 80 columns beside the numbers
        if row["target_reason"]:
            console.print(f"  {row['name']} target: {row['target_reason']}", markup=False)
    console.print(f"PyTorch, ORT: test accuracy of the same model in each; max|Δ|: largest |ORT − PyTorch| logit; "
                  f"target: what the file runs on (compile's default, auto, picks ort-int8 where onnxruntime's "
                  f"integer kernels apply on an x86 CPU, else exact); "
                  f"b=N ms: median onnxruntime latency of a batch of N. "
                  f"W1 is BWN (binary ±α weights, α = mean|W|); activations are 8-bit; quantized models were "
                  f"finetuned with distillation from fp32. Files in {r['out_dir']}/", markup=False)
