"""ORT CPU latency of the exported W4 model against the fp32 ONNX of the same model, batch 1 and 64.

    python benchmarks/latency.py [--quick]

Every file runs through ``qcompile.runtime.Session`` (CPU provider, the runtime's own session
options: what users get), timed around ``Session.run`` on real normalised MNIST test images.
Rows: fp32 (``CompiledModel.export_float``), W4 (per-channel 4-bit weights, float activations:
the goal row), W4A8 and W1A8 (BWN) for information. Goal: W4 / fp32 ≤ 1.05 at both batch sizes.

The machine's two cores are shared with other jobs, so the models are interleaved: each round runs
every model (order rotated per round) for a burst of calls at each batch size; the ratio is the
median over rounds of (model's median in the round / fp32's median in the same round), with the
ratio of overall medians and of minima beside it. Files are exported after calibration, without
QAT: latency does not depend on the weight values.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GOAL = 1.05
GOAL_ROW = "W4"
BATCHES = (1, 64)
CALLS_PER_ROUND = {1: 20, 64: 3}
VARIANTS = (
    ("W4", {"w_bits": 4, "a_bits": None}),
    ("W4A8", {"w_bits": 4, "a_bits": 8}),
    ("W1A8 (BWN)", {"w_bits": 1, "a_bits": 8, "quantizer": "bwn"}),
)


def render(record: dict) -> str:
    """The markdown table of a ``latency.json`` record."""
    rows = record["rows"]
    return common.markdown_table(
        ["model", "batch", "median ms (IQR)", "min ms", "/ fp32: median of round ratios (IQR)", "ratio of medians",
         "ratio of minima", f"goal ≤ {GOAL} (W4 only)"],
        [[r["name"], r["batch"], f"{r['median_ms']:.3f} ({r['q1_ms']:.3f}–{r['q3_ms']:.3f})", f"{r['min_ms']:.3f}",
          "1 (reference)" if r["name"] == "fp32" else
          f"{r['median_of_round_ratios']:.3f} ({r['round_ratio_q1_q3'][0]:.2f}–{r['round_ratio_q1_q3'][1]:.2f})",
          f"{r['ratio_of_medians']:.3f}", f"{r['ratio_of_minima']:.3f}", r["verdict"]] for r in rows])


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()

    from qcompile.runtime import Session
    from qcompile.runtime.normalisation import normalise

    warmup, rounds = (5, 4) if args.quick else (30, 300)
    splits = common.mnist()
    model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    images = splits.test.x[: max(BATCHES)]
    with tempfile.TemporaryDirectory(prefix="qcompile-latency-") as tmp:
        paths, compiled = {}, None
        for name, options in VARIANTS:
            compiled = common.compile_variant(model, splits, options)
            paths[name] = Path(tmp) / f"{name.split()[0].lower()}.onnx"
            compiled.export(paths[name])
        paths = {"fp32": Path(tmp) / "fp32.onnx", **paths}
        compiled.export_float(paths["fp32"])
        sessions = {name: Session(path, providers="CPUExecutionProvider") for name, path in paths.items()}
        file_bytes = {name: path.stat().st_size for name, path in paths.items()}

    inputs = {b: normalise(images[:b], splits.mean, splits.std) for b in BATCHES}
    names = list(sessions)
    for name in names:
        for b in BATCHES:
            for _ in range(warmup):
                sessions[name].run(inputs[b])

    calls = {(n, b): [] for n in names for b in BATCHES}
    round_medians = {(n, b): [] for n in names for b in BATCHES}
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            session = sessions[name]
            for b in BATCHES:
                x, burst = inputs[b], []
                for _ in range(CALLS_PER_ROUND[b]):
                    start = time.perf_counter_ns()
                    session.run(x)
                    burst.append((time.perf_counter_ns() - start) / 1e6)
                calls[(name, b)] += burst
                round_medians[(name, b)].append(common.median(burst))

    rows = []
    for name in names:
        for b in BATCHES:
            stats = common.summary(calls[(name, b)])
            ref, ref_rounds = calls[("fp32", b)], round_medians[("fp32", b)]
            per_round = [m / f for m, f in zip(round_medians[(name, b)], ref_rounds)]
            row = {"name": name, "batch": b, "file_bytes": file_bytes[name], **stats,
                   "samples_per_s": b * 1000.0 / stats["median_ms"],
                   "median_of_round_ratios": common.median(per_round),
                   "round_ratio_q1_q3": list(common.quartiles(per_round)),
                   "ratio_of_medians": stats["median_ms"] / common.median(ref),
                   "ratio_of_minima": stats["min_ms"] / min(ref)}
            row["verdict"] = common.verdict(row["median_of_round_ratios"], GOAL) if name == GOAL_ROW else None
            rows.append(row)

    goal_rows = [r for r in rows if r["name"] == GOAL_ROW]
    path = common.write_results("latency", args, {
        "goal": {"metric": "W4 / fp32 latency, median of per-round ratios, batch 1 and 64", "at_most": GOAL},
        "setup": {"runtime": "qcompile.runtime.Session(path, providers='CPUExecutionProvider'), default options",
                  "providers": sessions["fp32"].providers, "input": "normalised MNIST test images",
                  "warmup_calls": warmup, "rounds": rounds, "calls_per_round": CALLS_PER_ROUND},
        "float_model": float_info, "rows": rows,
        "goal_met": all(r["median_of_round_ratios"] <= GOAL for r in goal_rows),
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
