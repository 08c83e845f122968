"""DynaDFQ runtime cost: latency and file size of the ``dynamic`` bundle against the static max-bit (W4A4) file.

Compiles both on a synthetic pool (``qcompile synthesize``) from the benchmark CNN's float weights —
static ``--bits 4`` and dynamic ``--bits 2,3,4 --target-bitops 3`` — or times two given files. Timing as
in ``benchmarks/latency.py``: onnxruntime on 1 thread, ``predict`` on real normalised MNIST test images;
rounds interleave the two files (order alternating); the ratio is the median over rounds of (dynamic's
median call / static's median call in the same round). Batch-1 calls cycle over 64 images, so the
selector's different configurations all run. The dynamic file's specialised sessions are built in the
warm-up (one per configuration the images use).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "dynadfq_runtime_cost"
GOALS = {"latency": 1.10, "size": 1.05}
BATCHES = (1, 64)
CALLS_PER_ROUND = {1: 64, 64: 4}


def compile_pair(args, tmp: Path) -> tuple[Path, Path]:
    import qcompile

    paths = {}
    for name, options in (("w4.onnx", {"bits": "4"}), ("dyn.qcz", {"bits": "2,3,4", "target_bitops": 3.0})):
        cm = qcompile.compile(common.MODEL_SPEC, weights=args.weights, input_shape=common.INPUT_SHAPE,
                              method="dynadfq", method_options={**options, "pool": str(args.pool)})
        cm.finetune(epochs=args.epochs, lr=1e-4, optimizer="adam", kd_alpha=0.5, batch_size=64, seed=0,
                    progress=False)
        paths[name] = tmp / name
        cm.export(paths[name])
    return paths["w4.onnx"], paths["dyn.qcz"]


def time_pair(static: Path, dynamic: Path, x: np.ndarray, rounds: int, warmup: int) -> dict:
    from qcompile.runtime import load

    sessions = {"static": load(static, providers="cpu", intra_op_threads=1),
                "dynamic": load(dynamic, providers="cpu", intra_op_threads=1)}
    for s in sessions.values():
        for _ in range(warmup):
            s.predict(x[:64], batch_size=1)
            s.predict(x[:64], batch_size=64)
    per_round = {(n, b): [] for n in sessions for b in BATCHES}
    for r in range(rounds):
        for name in (("static", "dynamic") if r % 2 == 0 else ("dynamic", "static")):
            for b in BATCHES:
                burst = []
                for i in range(CALLS_PER_ROUND[b]):
                    xb = x[i % 64:i % 64 + 1] if b == 1 else x[:b]
                    start = time.perf_counter_ns()
                    sessions[name].predict(xb, batch_size=b)
                    burst.append((time.perf_counter_ns() - start) / 1e6)
                per_round[(name, b)].append(common.median(burst))
    out = {}
    for b in BATCHES:
        ratios = [d / s for d, s in zip(per_round[("dynamic", b)], per_round[("static", b)])]
        out[f"batch_{b}"] = {"static_ms": common.median(per_round[("static", b)]),
                             "dynamic_ms": common.median(per_round[("dynamic", b)]),
                             "median_of_round_ratios": common.median(ratios),
                             "round_ratio_q1_q3": list(common.quartiles(ratios)),
                             "verdict": common.verdict(common.median(ratios), GOALS["latency"])}
    sessions["dynamic"].predict(x[:64], batch_size=64)
    out["configurations_in_64_images"] = len(sessions["dynamic"].dispatch_report()["configurations"])
    return out


def render(record: dict) -> str:
    lat, size = record["latency"], record["size"]
    rows = [[f"latency, batch {b}", f"{lat[f'batch_{b}']['static_ms']:.3f}", f"{lat[f'batch_{b}']['dynamic_ms']:.3f}",
             f"{lat[f'batch_{b}']['median_of_round_ratios']:.3f}", lat[f"batch_{b}"]["verdict"]] for b in BATCHES]
    rows.append(["file bytes", size["static_bytes"], size["dynamic_bytes"], f"{size['ratio']:.3f}", size["verdict"]])
    return "\n".join([common.markdown_table(["", "static W4A4", "dynamic", "dynamic / static", "goal"], rows), "",
                      f"bundle members: {size['members']}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, help="the float weights (with --pool: compile both files)")
    parser.add_argument("--pool", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--static", type=Path, help="time these files instead of compiling")
    parser.add_argument("--dynamic", type=Path)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.static and args.dynamic) and not (args.weights and args.pool):
        parser.error("pass --weights and --pool (compile), or --static and --dynamic (files)")
    started, load_before = time.perf_counter(), common.load_average()
    splits = common.mnist()
    x = ((splits.test.x[:64] - splits.mean[0]) / splits.std[0]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        static, dynamic = (args.static, args.dynamic) if args.static else compile_pair(args, Path(tmp))
        rounds = 4 if args.quick else args.rounds
        latency = time_pair(static, dynamic, x, rounds, warmup=2 if args.quick else 10)
        ratio = dynamic.stat().st_size / static.stat().st_size
        size = {"static_bytes": static.stat().st_size, "dynamic_bytes": dynamic.stat().st_size, "ratio": ratio,
                "members": {i.filename: i.file_size for i in zipfile.ZipFile(dynamic).infolist()},
                "verdict": common.verdict(ratio, GOALS["size"])}
    path = common.write_results(NAME, args, {"latency": latency, "size": size, "goals": GOALS,
                                             "calls_per_round": CALLS_PER_ROUND, "rounds": rounds},
                                started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
