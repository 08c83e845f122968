"""QAT training step time against float training step time, on the same CNN and batch size.

    python benchmarks/qat_step_time.py [--quick]

A step is the library's own: the method's StepStrategy (STE: ``StandardStep``, i.e. zero_grad →
forward → cross-entropy → backward → Adam step) on a normalised batch of 64 real MNIST training
images, model in train mode, on CPU with torch's default threads. The float row runs the same
``StandardStep`` on the float model. No distillation (it would add a teacher forward to QAT only).

Rows:
* W4A8 (ranges frozen) — the steady state of QAT: per-channel 4-bit weights, 8-bit activations
  whose calibrated ranges are frozen (the loop freezes them after the first epoch by default);
* W4A8 (ranges observed) — the first epoch, when each activation quantizer also updates an EMA of
  its input's min/max;
* W1 (BWN) and W1 (DoReFa) — binary weights, float activations.

The machine's two cores are shared with other jobs, so the models are interleaved step by step
(one step of each per round, order rotated every round) and the ratio is reported three ways:
median QAT step / median float step, the median of the per-round ratios, and min / min (closest to
an idle machine). Goal: ≤ 1.3.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GOAL = 1.3
BATCH_SIZE = 64
VARIANTS = (
    ("W4A8 STE (ranges frozen)", {"w_bits": 4, "a_bits": 8}, True),
    ("W4A8 STE (ranges observed)", {"w_bits": 4, "a_bits": 8}, False),
    ("W1 BWN STE (float act.)", {"w_bits": 1, "a_bits": None, "quantizer": "bwn"}, True),
    ("W1 DoReFa STE (float act.)", {"w_bits": 1, "a_bits": None, "quantizer": "dorefa"}, True),
)


def render(record: dict) -> str:
    """The markdown table of a ``qat_step_time.json`` record."""
    rows = record["rows"]
    return common.markdown_table(
        ["model", "median step ms (IQR)", "min ms", "QAT / float: median of round ratios (IQR)",
         "ratio of medians", "ratio of minima", f"goal ≤ {GOAL}"],
        [[r["name"], f"{r['median_ms']:.1f} ({r['q1_ms']:.1f}–{r['q3_ms']:.1f})", f"{r['min_ms']:.1f}",
          "1 (reference)" if r["name"] == "float" else
          f"{r['median_of_round_ratios']:.3f} ({r['round_ratio_q1_q3'][0]:.2f}–{r['round_ratio_q1_q3'][1]:.2f})",
          f"{r['ratio_of_medians']:.3f}", f"{r['ratio_of_minima']:.3f}", r.get("verdict")] for r in rows])


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    from qcompile.train import Batches, StandardStep, TrainConfig, cross_entropy, epoch_permutation

    warmup, rounds = (2, 6) if args.quick else (10, 150)
    splits = common.mnist()
    float_model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    config = TrainConfig(epochs=1, lr=1e-3, optimizer="adam", batch_size=BATCH_SIZE, seed=0, device="cpu",
                         mean=splits.mean, std=splits.std)

    contenders = [("float", copy.deepcopy(float_model), StandardStep())]
    for name, options, frozen in VARIANTS:
        compiled = common.compile_variant(float_model, splits, options)
        if frozen:
            for q in compiled.activation_quantizers():
                q.freeze()
        contenders.append((name, compiled.graph_module, compiled.method.step_strategy() or StandardStep()))
    for _, model, strategy in contenders:
        model.train()
        strategy.setup(model, config)

    batches = Batches(splits.train, BATCH_SIZE, torch.device("cpu"), splits.mean, splits.std)
    data = list(batches.in_order(epoch_permutation(len(splits.train), 0, 0)))
    data = [b for b in data if len(b[1]) == BATCH_SIZE]

    def step(i: int, k: int) -> float:
        _, model, strategy = contenders[k]
        inputs, targets = data[i % len(data)]
        start = time.perf_counter_ns()
        strategy.step(model, inputs, targets, cross_entropy)
        return (time.perf_counter_ns() - start) / 1e6

    for i in range(warmup):
        for k in range(len(contenders)):
            step(i, k)
    times = [[] for _ in contenders]
    for r in range(rounds):
        n = len(contenders)
        for j in range(n):
            k = (j + r) % n  # rotate the order so no model always runs right after another
            times[k].append(step(warmup + r, k))

    float_times = times[0]
    rows = []
    for (name, _, _), t in zip(contenders, times):
        stats = common.summary(t)
        per_round = [q / f for q, f in zip(t, float_times)]
        row = {"name": name, **stats,
               "ratio_of_medians": stats["median_ms"] / common.median(float_times),
               "median_of_round_ratios": common.median(per_round),
               "round_ratio_q1_q3": list(common.quartiles(per_round)),
               "ratio_of_minima": stats["min_ms"] / min(float_times)}
        if name != "float":
            row["verdict"] = common.verdict(row["median_of_round_ratios"], GOAL)
        rows.append(row)

    path = common.write_results("qat_step_time", args, {
        "goal": {"metric": "QAT step time / float step time (median of per-round ratios)", "at_most": GOAL},
        "setup": {"batch_size": BATCH_SIZE, "optimizer": "adam", "lr": 1e-3, "objective": "cross-entropy (no KD)",
                  "device": "cpu", "torch_threads": torch.get_num_threads(), "warmup_steps_each": warmup,
                  "rounds": rounds, "steps_per_model_per_round": 1},
        "float_model": float_info, "rows": rows,
        "goal_met": all(r["median_of_round_ratios"] <= GOAL for r in rows[1:]),
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
