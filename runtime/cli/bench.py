"""``qcompile-runtime bench MODEL.onnx``: file size, information bound and latency.

The work is :func:`qcompile.runtime.bench.benchmark`; this module declares the arguments and the text.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from qcompile.runtime.cli.command import (PROVIDERS, Subcommand, add_model_argument, add_providers_argument,
                                          add_spin_argument, at_least, int_list)
from qcompile.runtime.cli.text import ms, nbytes, quotient, ratio, table

SUMMARY = ("Size (file, weights, information bound), session memory and onnxruntime latency of MODEL.onnx, "
           "vs a reference.")
REFERENCE_HELP = "Another ONNX file (usually the fp32 export) to compare size and latency against."
REPEATS_HELP, WARMUP_HELP = "Timed runs per batch size.", "Untimed runs first."
BATCH_SIZES_HELP = "Batch sizes to time."
SIZES = [("file", "file_bytes"), ("stored tensors", "weight_bytes"), ("information bound", "bound_bytes")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--reference", "-r", metavar="REF.onnx", default=None, help=REFERENCE_HELP)
    parser.add_argument("--batch-sizes", type=int_list, default=(1, 64), metavar="N[,N...]",
                        help=f"{BATCH_SIZES_HELP} (default: 1,64)")
    parser.add_argument("--repeats", type=at_least(1), default=50, metavar="N",
                        help=f"{REPEATS_HELP} (default: 50)")
    parser.add_argument("--warmup", type=at_least(0), default=10, metavar="N", help=f"{WARMUP_HELP} (default: 10)")
    add_providers_argument(parser)
    add_spin_argument(parser)


def execute(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from qcompile.runtime.bench import benchmark

    return benchmark(args.model, args.reference, args.batch_sizes, repeats=args.repeats, warmup=args.warmup,
                     providers=PROVIDERS[args.providers], spinning=args.spin, log=log)


def rows(r: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """Columns, rows and footnotes of a bench report: metrics as rows and files as columns, so it stays
    readable in 80 columns however many batch sizes (the compiler's ``qcompile bench`` shows the same)."""
    files = [r["model"]] + ([r["reference"]] if "reference" in r else [])
    ratios = r.get("ratios")
    out = [[label, *(nbytes(f["size"][key]) for f in files),
            *([ratio(quotient(r["model"]["size"][key], r["reference"]["size"][key]))] if ratios else [])]
           for label, key in SIZES]
    out.append(["file / bound", *(ratio(f["size"]["file_over_bound"]) for f in files), *([""] if ratios else [])])
    out.append(["session memory (RSS growth)", *(nbytes(f["memory"]["rss_growth_bytes"]) for f in files),
                *([ratio(ratios["session_rss"])] if ratios else [])])
    for b in r["batch_sizes"]:
        out.append([f"latency, batch {b} (median)", *(ms(f["latency"][b]["median_ms"]) for f in files),
                    *([ratio(ratios["latency"][b])] if ratios else [])])
    columns = ["", "model", *(["reference", "model / ref"] if ratios else [])]
    notes = [f"{label}: {f['path']} ({', '.join(f['providers'])})" for label, f in zip(columns[1:], files)]
    notes += sorted({f["size"]["bound_note"] for f in files if f["size"].get("bound_note")})
    notes += sorted({f["memory"]["note"] for f in files if f["memory"].get("note")})
    return columns, out, notes


TITLE = "Size and onnxruntime latency"


def render(r: dict[str, Any]) -> str:
    columns, body, notes = rows(r)
    return "\n".join([table(TITLE, columns, body, right=range(1, len(columns))), *(f"  {n}" for n in notes)])


COMMAND = Subcommand("bench", SUMMARY, add_arguments, execute, render)
