"""``qcompile run`` and ``qcompile bench``: use an exported artifact with the torch-free runtime.

These are the commands a deployment machine runs, so they import only onnxruntime, numpy and
qcompile's torch-free parts (``qcompile.runtime``, ``qcompile.data``, ``qcompile.export.size``) — a
test runs them with torch made unimportable. Keep it that way: no ``qcompile.api`` here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from qcompile.cli import output as fmt
from qcompile.cli.options import (PROVIDERS, absolute_spec, batch_sizes_option, data_option, normalization_options,
                                  providers_option)
from qcompile.cli.output import Output, Result, reporting

spin_option = click.option(
    "--spin/--no-spin", default=None,
    help="Let onnxruntime's worker threads busy-wait between kernels. Default: the runtime's (off; spinning "
         "was slower on a machine whose cores do other work too, see docs/BENCHMARKS.md).")
NORMALIZATION_SOURCES = {"artifact": "the artifact's", "given": "given",
                         "dataset": "the data's train statistics (plain ONNX: none recorded)"}
onnx_argument = click.argument("model", metavar="MODEL.onnx",
                               type=click.Path(exists=True, dir_okay=False, path_type=Path))


@click.command()
@onnx_argument
@data_option(required=True, help="Dataset whose test split is scored.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=256, show_default=True,
              help="Samples per onnxruntime call.")
@click.option("--task", default="classification", show_default=True, metavar="NAME",
              help="How the outputs are scored (a registered task; classification reports top-1 accuracy).")
@normalization_options("For an artifact that records none (a plain ONNX file, or a qcompile artifact compiled "
                       "without data); an artifact's own is always used [default: a plain ONNX file gets the data's "
                       "train statistics].")
@providers_option
@spin_option
@reporting
def run(out: Output, model: Path, data: str, batch_size: int, task: str, norm: dict, providers: str,
        spin: bool | None) -> Result:
    """Score MODEL.onnx on the test split in onnxruntime (classification: accuracy); no torch needed."""
    from qcompile.data import load_dataset
    from qcompile.runtime import Session
    from qcompile.runtime.normalisation import choose, for_scoring
    from qcompile.runtime.tasks import get_runtime_task

    measures = get_runtime_task(task)
    session = Session(model, providers=PROVIDERS[providers], spinning=spin)
    splits = load_dataset(absolute_spec(data))
    art = session.artifact
    normalization, source = for_scoring(art, splits.mean, splits.std, choose(**norm))
    if source == "dataset":
        out.log(f"{model} is a plain ONNX file that records no normalisation: using the train statistics of {data}")
    x = normalization.apply(splits.test.x)
    started = time.perf_counter()
    outputs = session.predict(x, batch_size=batch_size)
    seconds = time.perf_counter() - started
    scored = measures.report(outputs, measures.targets(splits.test.x, splits.test.y))
    report = {"model": model, "data": data, "task": task, **scored, "samples": len(splits.test),
              "seconds": seconds, "samples_per_s": len(splits.test) / seconds,
              "providers": session.providers, "spinning": session.spinning,
              "normalization": source, "mean": list(normalization.mean), "std": list(normalization.std),
              "method": art.method, "layers": list(art.layers)}
    return Result(report, render_run)


@click.command()
@onnx_argument
@click.option("--reference", "-r", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another ONNX file (usually the fp32 export) to compare size and latency against.")
@batch_sizes_option
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per batch size.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs first.")
@providers_option
@spin_option
@reporting
def bench(out: Output, model: Path, reference: Path | None, batch_sizes: tuple[int, ...], repeats: int,
          warmup: int, providers: str, spin: bool | None) -> Result:
    """Size (file, weights, information bound) and onnxruntime latency of MODEL.onnx, vs a reference."""
    from qcompile.runtime import Session, measure_latency

    def measure(path: Path) -> dict[str, Any]:
        out.log(f"timing {path} at batch sizes {', '.join(map(str, batch_sizes))}")
        session = Session(path, providers=PROVIDERS[providers], spinning=spin)
        latency = measure_latency(session, batch_sizes, warmup=warmup, repeats=repeats)
        return {"path": path, "size": size_summary(path), "latency": latency, "providers": session.providers,
                "spinning": session.spinning}

    report: dict[str, Any] = {"model": measure(model), "batch_sizes": list(batch_sizes), "repeats": repeats}
    if reference is not None:
        ref = report["reference"] = measure(reference)
        m = report["model"]
        report["ratios"] = {
            "file_size": m["size"]["file_bytes"] / ref["size"]["file_bytes"],
            "latency": {b: m["latency"][b]["median_ms"] / ref["latency"][b]["median_ms"] for b in batch_sizes},
        }
    return Result(report, render_bench)


def size_summary(path: Path) -> dict[str, Any]:
    """``size_report`` without its per-tensor list: file, stored tensor bytes, information bound, ratio."""
    from qcompile.export.size import size_report

    r = size_report(path)
    return {"file_bytes": r["file_bytes"], "weight_bytes": sum(t["stored_bytes"] for t in r["tensors"]),
            "bound_bytes": r["bound_bytes"], "quantized_bound_bytes": r["quantized_bound_bytes"],
            "file_over_bound": r["ratio"], "by_dtype": r["by_dtype"]}


# ----------------------------------------------------------------------------- rendering
def render_run(console: Console, r: dict[str, Any]) -> None:
    from qcompile.runtime.tasks import get_runtime_task

    console.print(fmt.key_values(f"{r['model']} on {r['data']} (test split)", [
        *get_runtime_task(r["task"]).report_rows(r),
        ("throughput", f"{r['samples_per_s']:,.0f} samples/s ({r['seconds']:.2f}s)"),
        ("providers", ", ".join(r["providers"])),
        ("method", r["method"] or "— (no qcompile metadata)"),
        ("normalisation", f"{NORMALIZATION_SOURCES[r['normalization']]}: mean {r['mean']}, std {r['std']}"),
    ]))


def render_bench(console: Console, r: dict[str, Any]) -> None:
    """Metrics as rows and files as columns: stays readable in 80 columns however many batch sizes."""
    files = [r["model"]] + ([r["reference"]] if "reference" in r else [])
    ratios = r.get("ratios")
    sizes = [("file", "file_bytes"), ("stored tensors", "weight_bytes"), ("information bound", "bound_bytes")]
    rows = [[label, *(fmt.nbytes(f["size"][key]) for f in files),
             *([fmt.ratio(r["model"]["size"][key] / r["reference"]["size"][key])] if ratios else [])]
            for label, key in sizes]
    rows.append(["file / bound", *(fmt.ratio(f["size"]["file_over_bound"]) for f in files), *([""] if ratios else [])])
    for b in r["batch_sizes"]:
        rows.append([f"latency, batch {b} (median)", *(fmt.ms(f["latency"][b]["median_ms"]) for f in files),
                     *([fmt.ratio(ratios["latency"][b])] if ratios else [])])
    columns = ["", "model", *(["reference", "model / ref"] if ratios else [])]
    console.print(fmt.table("Size and onnxruntime latency", columns, rows, right=tuple(range(1, len(columns)))))
    for label, f in zip(columns[1:], files):
        console.print(f"  {label}: {f['path']} ({', '.join(f['providers'])})", markup=False)
