"""MetaQuant's cost per training step against STE's: wall-clock time and peak memory, measured alike.

    python benchmarks/metaquant_overhead.py [--quick]

Same network, float start, batch (64 real MNIST training images) and optimizer (SGD, lr 1e-3) as
``metaquant_study.py``, on CPU with one torch thread. A step is the method's own StepStrategy:
STE's ``StandardStep`` (zero_grad → forward → loss → backward → SGD step) or ``MetaQuantStep``
(meta-net forward, refinement, forward at the meta weights, backward, meta-net backward + Adam on
φ, SGD step). Contenders, for DoReFa and BWN: STE; FC-Grad, MultiFC and LSTMFC with
``chunk_size=0`` (what the study trains with: the meta-net graph is kept) and with the library
default (chunks of 2^18 weights, the meta-net forward recomputed for φ's backward).

Time: all contenders of one quantizer are interleaved step by step (one step each per round,
order rotated every round) after a warm-up, so machine load hits them alike; reported as median ms
and the ratio to STE three ways (median / median, median of per-round ratios, min / min).

Memory, two measures applied identically to every contender:

* ``autograd + state``: the peak over a step of the bytes of tensors saved for backward
  (``qcompile.methods.metaquant.memory.PeakMemory`` on CPU — it wraps STE's step exactly as
  MetaQuant's), plus the bytes held between steps: parameters, their gradients, optimizer state
  and, for MetaQuant, ``MetaQuantStep.state_bytes()`` (g_Ŵ, W̃, LSTM state, φ and its Adam). It
  misses temporaries autograd never saves (e.g. the no-grad meta-net forward of a chunked run).
* ``RSS growth``: each contender in a fresh process; resident memory just before its first step
  is subtracted from the high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) after
  10 steps — everything the steps allocated, temporaries and allocator overhead included. glibc is
  told to mmap every block ≥ 64 KiB and to return it when freed (``MALLOC_ENV``), so the resident
  set follows the live tensors instead of the allocator's caching.

Goals: time ≤ 1.3 × STE, memory ≤ 1.5 × STE; the paper reports +34% time (Sec. 5.5).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import metaquant_study as study  # noqa: E402

TIME_GOAL, MEMORY_GOAL = 1.3, 1.5
BATCH_SIZE = 64
RSS_STEPS = 10
# glibc: blocks ≥ 64 KiB always mmap'd and returned on free (no dynamic threshold), so RSS follows live tensors
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
DEFAULT_CHUNK = None  # the library default (MetaQuantOptions.chunk_size)


def contenders(quantizer: str) -> list[tuple[str, str | None, int | None]]:
    """(name, meta, chunk_size) — chunk_size None: the library default."""
    rows: list[tuple[str, str | None, int | None]] = [("STE", None, None)]
    for meta in ("fc-grad", "multifc", "lstmfc"):
        rows.append((f"{study.META_NAMES[meta]} (chunk_size=0, as trained)", meta, 0))
        rows.append((f"{study.META_NAMES[meta]} (default chunks, recompute)", meta, DEFAULT_CHUNK))
    return rows


def build(quantizer: str, meta: str | None, chunk_size: int | None, splits, weights: Path):
    """(graph module in train mode, set-up strategy) for one contender."""
    import torch

    import qcompile
    from qcompile.methods.metaquant import MetaQuantOptions, MetaQuantStep
    from qcompile.train import StandardStep, TrainConfig

    model = study.build_model()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    options = None
    if meta is not None:
        options = {"meta": meta} if chunk_size is None else {"meta": meta, "chunk_size": chunk_size}
    cm = qcompile.compile(model.eval(), input_shape=common.INPUT_SHAPE, method="ste" if meta is None else "metaquant",
                          quantizer=quantizer, w_bits=1, a_bits=None, method_options=options)
    gm = cm.graph_module.train()
    strategy = StandardStep() if meta is None else MetaQuantStep(MetaQuantOptions.from_dict(options),
                                                                 measure_memory=False)
    config = TrainConfig(epochs=1, lr=study.BASE_LR, optimizer="sgd", batch_size=BATCH_SIZE, seed=0, device="cpu",
                         mean=splits.mean, std=splits.std)
    strategy.setup(gm, config)
    return gm, strategy


def batches(splits, n: int):
    import torch

    from qcompile.train import Batches, epoch_permutation

    data = Batches(splits.train, BATCH_SIZE, torch.device("cpu"), splits.mean, splits.std)
    out = [b for b in data.in_order(epoch_permutation(len(splits.train), 0, 0)) if len(b[1]) == BATCH_SIZE]
    return out[:n]


def state_bytes(model, strategy) -> int:
    """Bytes held between steps: parameters, gradients, optimizer state, MetaQuant's own state."""
    from qcompile.methods.metaquant.memory import tensor_bytes

    params = [p for p in model.parameters()]
    total = tensor_bytes(params) + tensor_bytes([p.grad for p in params])
    total += tensor_bytes([strategy.optimizer.state_dict()["state"]])
    if hasattr(strategy, "state_bytes"):
        total += strategy.state_bytes()
    return total


def autograd_memory(model, strategy, data) -> dict[str, float]:
    """Peak saved-for-backward bytes over the steps (after the first, MetaQuant's harvest-only step)."""
    from qcompile.methods.metaquant.memory import PeakMemory
    from qcompile.train import cross_entropy

    peaks = []
    for inputs, targets in data:
        with PeakMemory("cpu") as meter:
            strategy.step(model, inputs, targets, cross_entropy)
        peaks.append(meter.peak_bytes)
    saved, held = max(peaks[1:]), state_bytes(model, strategy)
    return {"saved_peak_mb": saved / 2**20, "state_mb": held / 2**20, "total_mb": (saved + held) / 2**20}


def _status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024
    return fields


def rss_child(quantizer: str, meta: str | None, chunk_size: int | None, weights: str) -> None:
    """Runs in a fresh process: prints the RSS growth of RSS_STEPS steps as JSON."""
    import torch

    from qcompile.train import cross_entropy

    torch.set_num_threads(1)
    splits = common.mnist()
    model, strategy = build(quantizer, meta, chunk_size, splits, Path(weights))
    data = batches(splits, RSS_STEPS)
    before = _status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    for inputs, targets in data:
        strategy.step(model, inputs, targets, cross_entropy)
    print(json.dumps({"rss_growth_mb": (_status()["VmHWM"] - before) / 2**20}))


def rss_growth(quantizer: str, meta: str | None, chunk_size: int | None, weights: Path) -> float | None:
    cmd = [sys.executable, __file__, "--rss-child", json.dumps([quantizer, meta, chunk_size, str(weights)])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **MALLOC_ENV})
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["rss_growth_mb"]


def time_steps(models: list[tuple[Any, Any]], data, warmup: int, rounds: int) -> list[list[float]]:
    """Interleaved step times (ms) per contender: one step each per round, order rotated."""
    from qcompile.train import cross_entropy

    n = len(models)
    times: list[list[float]] = [[] for _ in range(n)]
    for r in range(warmup + rounds):
        for j in range(n):
            k = (j + r) % n
            model, strategy = models[k]
            inputs, targets = data[r % len(data)]
            start = time.perf_counter_ns()
            strategy.step(model, inputs, targets, cross_entropy)
            elapsed = (time.perf_counter_ns() - start) / 1e6
            if r >= warmup:
                times[k].append(elapsed)
    return times


def render(record: dict[str, Any]) -> str:
    """The table of a recorded run (what ``benchmarks/show.py`` prints)."""
    return record["markdown"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds; JSON under benchmarks/.cache/")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*json.loads(args.rss_child))
        return
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    torch.set_num_threads(1)
    warmup, rounds = (2, 4) if args.quick else (5, 40)
    splits = common.mnist()
    weights, float_info = study.float_checkpoint(splits, study.FloatRecipe())
    data = batches(splits, 24)
    rows = []
    for quantizer in ("dorefa", "bwn"):
        specs = contenders(quantizer)
        models = [build(quantizer, meta, chunk, splits, weights) for _, meta, chunk in specs]
        times = time_steps(models, data, warmup, rounds)
        memory = [autograd_memory(*build(quantizer, meta, chunk, splits, weights), data[:4])
                  for _, meta, chunk in specs]
        rss = [rss_growth(quantizer, meta, chunk, weights) for _, meta, chunk in specs]
        base_t, base_m, base_r = times[0], memory[0], rss[0]
        for (name, meta, chunk), t, m, r in zip(specs, times, memory, rss):
            per_round = [a / b for a, b in zip(t, base_t)]
            row = {"quantizer": quantizer, "name": name, "meta": meta, "chunk_size": chunk, "time": common.summary(t),
                   "time_ratio_median": common.median(t) / common.median(base_t),
                   "time_ratio_per_round_median": common.median(per_round),
                   "time_ratio_min": min(t) / min(base_t), "memory": m,
                   "memory_ratio": m["total_mb"] / base_m["total_mb"], "rss_growth_mb": r,
                   "rss_ratio": (r / base_r) if r is not None and base_r else None}
            rows.append(row)
            print(f"{quantizer:6s} {name:45s} {row['time']['median_ms']:7.1f} ms  ×{row['time_ratio_median']:.2f}  "
                  f"mem {m['total_mb']:6.2f} MB ×{row['memory_ratio']:.2f}  rss {r if r is None else round(r, 1)} MB",
                  flush=True)
    table = common.markdown_table(
        ["quantizer", "backward", "ms/step median (IQR)", "time / STE: median, per-round, min",
         "autograd + state MB", "/ STE", "RSS growth MB", "/ STE"],
        [[r["quantizer"], r["name"],
          f"{r['time']['median_ms']:.1f} ({r['time']['q1_ms']:.1f}–{r['time']['q3_ms']:.1f})",
          f"{r['time_ratio_median']:.2f}, {r['time_ratio_per_round_median']:.2f}, {r['time_ratio_min']:.2f}",
          f"{r['memory']['total_mb']:.2f}", f"{r['memory_ratio']:.2f}",
          "—" if r["rss_growth_mb"] is None else f"{r['rss_growth_mb']:.1f}",
          "—" if r["rss_ratio"] is None else f"{r['rss_ratio']:.2f}"] for r in rows])
    print(table)
    args.out = args.out or (study.QUICK_RUNS_DIR / "metaquant_overhead.json" if args.quick else None)
    path = common.write_results("metaquant_overhead", args, {
        "float": float_info, "batch_size": BATCH_SIZE, "warmup": warmup, "rounds": rounds, "rss_steps": RSS_STEPS,
        "goals": {"time": TIME_GOAL, "memory": MEMORY_GOAL}, "rows": rows, "markdown": table,
    }, started, load_before)
    print(f"wrote {path.relative_to(common.REPO)} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
