"""DynaDFQ's benchmark (dynadfq.md §9) on the MNIST CNN: data sources, dynamic vs static, ablations, criteria A–E.

    python benchmarks/dynadfq_benchmark.py pools                 # synthesise the pools (cached)
    python benchmarks/dynadfq_benchmark.py arms [--seeds 0,1,2]  # data sources at W4A4 / W3A3 / W2A4
    python benchmarks/dynadfq_benchmark.py dynamic [--seeds 0]   # selector settings and ablations
    python benchmarks/dynadfq_benchmark.py report                # criteria A–E, tables, PNGs

Every run (one compile + fine-tune + ORT score) is cached as ``benchmarks/results/dynadfq_benchmark/<key>.json``
(its per-image predictions as ``.npz`` under ``benchmarks/.cache/``), so the stages can be run in pieces, in
any order, and resumed: a run whose JSON exists is skipped. The float model is the benchmark CNN of
``common.py`` (trained on the first 8,000 MNIST images); real data serves only that, arm (a) and the test
on the last 2,000 images. The fine-tune budget is the same for every arm: ``STEPS`` Adam steps of 64 at
lr ``LR``, distillation α ``KD_ALPHA`` from the float model. The run list and the analysis live in
``dynadfq_benchmark_runs.py`` and ``dynadfq_benchmark_report.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dynadfq_benchmark_runs as runs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("pools", "arms", "dynamic", "report", "all"))
    parser.add_argument("--seeds", default=None, help="fine-tune seeds, e.g. 0,1,2 (default: arms 0,1,2; dynamic 0)")
    parser.add_argument("--only", default=None, help="comma-separated run keys (or prefixes) to run")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny pools and 5 steps, separate cache")
    args = parser.parse_args(argv)
    setup = runs.Setup.create(quick=args.quick)
    if args.stage in ("pools", "all"):
        runs.make_pools(setup)
    if args.stage in ("arms", "all"):
        runs.run_all(setup, runs.arm_runs(_seeds(args.seeds, (0, 1, 2))), args.only)
    if args.stage in ("dynamic", "all"):
        runs.run_all(setup, runs.dynamic_runs(_seeds(args.seeds, (0,))), args.only)
    if args.stage in ("report", "all"):
        import dynadfq_benchmark_report as report

        report.write(setup)


def _seeds(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    return default if text is None else tuple(int(s) for s in text.split(","))


if __name__ == "__main__":
    main()
