"""ORT thread spinning on or off: latency of the example CNN exports, idle and with a core kept busy.

    python benchmarks/spinning.py [--quick]

onnxruntime's intra-op worker threads busy-wait for the next parallel section unless
``session.intra_op.allow_spinning`` is ``0``. That helps when the cores are otherwise idle and hurts
when another process needs them. This picks the runtime's default (``qcompile.runtime.engine.
DEFAULT_SPINNING``): each model runs through ``qcompile.runtime.Session(..., spinning=on/off)`` (CPU,
ORT's default thread count), timed around ``Session.run`` at batch 1 and 64 on normalised MNIST test
images, with the machine as it is ("idle") and with one extra process spinning a core ("busy": a
Python busy loop, resumed with SIGCONT for the busy bursts and stopped with SIGSTOP otherwise).

Conditions are interleaved: each round runs every (load, spinning, model) combination, order rotated,
as a burst of calls per batch size, with a 20 ms pause after every burst so spinning workers of the
previous session are asleep again. Reported per (model, batch, load): the median latency with
spinning off and on, and the median over rounds of (off / on) within the round. Files are exported
after calibration without training: latency does not depend on the weight values. The machine's two
cores are shared with other jobs; the load average is recorded before and after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

BATCHES = (1, 64)
CALLS_PER_BURST = {1: 20, 64: 3}
PAUSE_S = 0.02
LOADS = ("idle", "busy")
SPINNING = (False, True)
VARIANTS = (
    ("W4A8", {"w_bits": 4, "a_bits": 8}),
    ("W1A8 (BWN)", {"w_bits": 1, "a_bits": 8, "quantizer": "bwn"}),
)


def render(record: dict) -> str:
    return common.markdown_table(
        ["model", "batch", "load", "spin off: median ms (IQR)", "spin on: median ms (IQR)",
         "off / on: median of round ratios (IQR)", "ratio of medians"],
        [[r["name"], r["batch"], r["load"], _ms(r["off"]), _ms(r["on"]),
          f"{r['median_of_round_ratios']:.3f} ({r['round_ratio_q1_q3'][0]:.2f}–{r['round_ratio_q1_q3'][1]:.2f})",
          f"{r['ratio_of_medians']:.3f}"] for r in record["rows"]])


def _ms(s: dict) -> str:
    return f"{s['median_ms']:.3f} ({s['q1_ms']:.3f}–{s['q3_ms']:.3f})"


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    import numpy as np

    from qcompile.runtime import Session

    warmup, rounds = (3, 4) if args.quick else (20, 60)
    splits = common.mnist()
    model = common.build_model().eval()
    images = splits.test.x[: max(BATCHES)]
    with tempfile.TemporaryDirectory(prefix="qcompile-spinning-") as tmp:
        paths = {}
        for name, options in VARIANTS:
            paths[name] = Path(tmp) / f"{name.split()[0].lower()}.onnx"
            common.compile_variant(model, splits, options).export(paths[name])
        sessions = {(name, spin): Session(path, providers="CPUExecutionProvider", spinning=spin)
                    for name, path in paths.items() for spin in SPINNING}

    mean = np.asarray(splits.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(splits.std, np.float32).reshape(1, -1, 1, 1)
    inputs = {b: np.ascontiguousarray((images[:b] - mean) / std, dtype=np.float32) for b in BATCHES}
    for session in sessions.values():
        for b in BATCHES:
            for _ in range(warmup):
                session.run(inputs[b])

    combos = [(load, name, spin) for load in LOADS for name in paths for spin in SPINNING]
    calls = {(load, name, spin, b): [] for load, name, spin in combos for b in BATCHES}
    round_medians = {key: [] for key in calls}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.kill(hog.pid, signal.SIGSTOP)
    try:
        for r in range(rounds):
            for j in range(len(combos)):
                load, name, spin = combos[(j + r) % len(combos)]
                os.kill(hog.pid, signal.SIGCONT if load == "busy" else signal.SIGSTOP)
                for b in BATCHES:
                    burst = []
                    for _ in range(CALLS_PER_BURST[b]):
                        start = time.perf_counter_ns()
                        sessions[(name, spin)].run(inputs[b])
                        burst.append((time.perf_counter_ns() - start) / 1e6)
                    calls[(load, name, spin, b)] += burst
                    round_medians[(load, name, spin, b)].append(common.median(burst))
                    time.sleep(PAUSE_S)
    finally:
        hog.kill()
        hog.wait()

    rows = []
    for name in paths:
        for b in BATCHES:
            for load in LOADS:
                off, on = calls[(load, name, False, b)], calls[(load, name, True, b)]
                per_round = [x / y for x, y in zip(round_medians[(load, name, False, b)],
                                                   round_medians[(load, name, True, b)])]
                rows.append({"name": name, "batch": b, "load": load, "off": common.summary(off),
                             "on": common.summary(on), "median_of_round_ratios": common.median(per_round),
                             "round_ratio_q1_q3": list(common.quartiles(per_round)),
                             "ratio_of_medians": common.median(off) / common.median(on)})
    path = common.write_results("spinning", args, {
        "setup": {"runtime": "qcompile.runtime.Session(path, providers='CPUExecutionProvider', spinning=...)",
                  "intra_op_threads": "onnxruntime default", "busy": "one extra process in a Python busy loop",
                  "input": "normalised MNIST test images", "warmup_calls": warmup, "rounds": rounds,
                  "calls_per_burst": CALLS_PER_BURST, "pause_after_burst_s": PAUSE_S},
        "rows": rows,
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
