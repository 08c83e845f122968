"""``qcompile-runtime run MODEL.onnx --data SPEC``: accuracy on a dataset's test split.

The work is :func:`qcompile.runtime.scoring.score`; this module declares the arguments and the text.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from qcompile.runtime.cli.command import (DATA_FORMS, PROVIDERS, Subcommand, add_model_argument,
                                          add_normalization_arguments, add_providers_argument, add_spin_argument,
                                          at_least)
from qcompile.runtime.cli.text import key_values

SUMMARY = "Score MODEL.onnx on the test split in onnxruntime (classification: accuracy); no torch needed."
DATA_HELP = f"Dataset whose test split is scored. One of: {DATA_FORMS}."
BATCH_HELP = "Samples per onnxruntime call."
NORM_HELP = ("For an artifact that records none (a plain ONNX file, or a qcompile artifact compiled without data); "
             "an artifact's own is always used [default: a plain ONNX file gets the data's train statistics].")
NORMALIZATION_SOURCES = {"artifact": "the artifact's", "given": "given",
                         "dataset": "the data's train statistics (plain ONNX: none recorded)"}
TASK_HELP = "How the outputs are scored (a registered task; classification reports top-1 accuracy)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser)
    parser.add_argument("--data", "-d", required=True, metavar="SPEC", help=DATA_HELP)
    parser.add_argument("--batch-size", "-b", type=at_least(1), default=256, metavar="N",
                        help=f"{BATCH_HELP} (default: 256)")
    parser.add_argument("--task", default=None, metavar="NAME",
                        help=f"{TASK_HELP} (default: the artifact's; classification if it records none)")
    add_normalization_arguments(parser, NORM_HELP)
    add_providers_argument(parser)
    add_spin_argument(parser)


def execute(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from qcompile.runtime.normalisation import choose
    from qcompile.runtime.scoring import score

    return score(args.model, args.data, batch_size=args.batch_size, providers=PROVIDERS[args.providers],
                 task=args.task, spinning=args.spin, normalization=choose(args.norm, args.mean, args.std), log=log)


def summary(r: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Title and labelled values of a run report (the compiler's ``qcompile run`` shows the same)."""
    from qcompile.runtime.tasks import get_runtime_task

    return f"{r['model']} on {r['data']} (test split)", [
        *get_runtime_task(r["task"]).report_rows(r),
        *dispatch_rows(r),
        ("throughput", f"{r['samples_per_s']:,.0f} samples/s ({r['seconds']:.2f}s)"),
        ("providers", ", ".join(r["providers"])),
        ("method", r["method"] or "— (no qcompile metadata)"),
        ("normalisation", f"{NORMALIZATION_SOURCES[r['normalization']]}: mean {r['mean']}, std {r['std']}"),
    ]


def dispatch_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """A dynamic model's per-image widths: mean bits, mean BitOPs (selector included), configurations."""
    if "mean_bits" not in r:
        return []
    top = sorted(r["configurations"].items(), key=lambda kv: -kv[1])[:3]
    return [("bits per image", f"{r['mean_bits']:.3f} (mean over layers and images)"),
            ("BitOPs per image", f"{r['mean_bitops'] / 1e9:.4f} G (selector {r['selector_bitops'] / 1e9:.4f} G)"),
            ("configurations", f"{len(r['configurations'])} used; most frequent "
                               + ", ".join(f"{c} ×{n}" for c, n in top))]


def render(r: dict[str, Any]) -> str:
    return key_values(*summary(r))


COMMAND = Subcommand("run", SUMMARY, add_arguments, execute, render)
