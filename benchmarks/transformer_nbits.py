"""4-bit Linear weights in memory: a small transformer as fp32 and as W4 in groups (MatMulNBits) in onnxruntime.

    nice -n 5 python benchmarks/transformer_nbits.py [--float-weights tf.pt] [--groups 32,64,128] [--epochs 1]

Model: ``examples/tiny_transformer.py:build`` (4 pre-LN blocks, d 192, 4 heads, FFN 768; every projection an
``nn.Linear``) on MNIST read as 28 row tokens (8,000 train / 2,000 test). ``--float-weights`` takes a state
dict (from ``examples/train_float.py``); without it the float model is trained here (benchmarks/.cache).
Each W4 variant: ``--w-bits 4 --a-bits none --group-size G``, accuracy after calibration only (PTQ) and after
``--epochs`` of QAT (Adam, lr 1e-4), exported as MatMulNBits; ORT accuracy and the largest |ORT − PyTorch|
logit over the test split. For information only, ``W4g32 int8-A`` is the same file with MatMulNBits'
``accuracy_level`` 4 (the kernel quantizes its float input to int8 per block): faster on VNNI CPUs, but it
no longer matches PyTorch to 1e-4, so qcompile does not write it.

Latency: one intra-op thread, the runtime's own session options, real normalised test images; contenders
interleaved (order rotated per round), ratio = median over rounds of (model's round median / fp32's).
Session memory: RSS growth while each session is built, in a fresh process after onnxruntime's one-time
set-up (:func:`qcompile.runtime.memory.session_memory`; the set-up is recorded apart), median of
``MEMORY_REPEATS`` interleaved measurements.
Goals: W4g32 within 1 point of float; latency at batch 1 ≤ 0.7× fp32; session memory ≤ 0.35× fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

MODEL = f"{common.REPO / 'examples' / 'tiny_transformer.py'}:build"
BATCHES = (1, 64)
CALLS_PER_ROUND = {1: 10, 64: 2}
MEMORY_REPEATS = 5
GOALS = {"accuracy_drop_points": 1.0, "latency_b1": 0.7, "session_rss": 0.35}
INT8_A = "W4g32 int8-A"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; JSON is marked quick")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--float-weights", type=Path, default=None, help="state dict of the float model")
    parser.add_argument("--groups", default="32,64,128", help="group sizes to compile (default 32,64,128)")
    parser.add_argument("--epochs", type=int, default=1, help="QAT epochs per group size (0 = PTQ only)")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved latency rounds")
    return parser.parse_args()


def float_model(args, splits):
    import torch

    from qcompile.loading import load_model

    if args.float_weights is None:
        return common.float_model(splits, common.float_recipe(args.quick), model_file=Path(MODEL.rsplit(":", 1)[0]))
    model = load_model(MODEL)
    model.load_state_dict(torch.load(args.float_weights, map_location="cpu", weights_only=True))
    return model.eval(), {"weights": str(args.float_weights), "cached": True}


def with_accuracy_level(src: Path, dst: Path, level: int) -> None:
    """A copy of ``src`` whose MatMulNBits nodes use ``accuracy_level`` = ``level``."""
    import onnx

    model = onnx.load(src)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = level
    onnx.save(model, dst)


def interleaved_latency(sessions: dict, inputs: dict, rounds: int) -> dict:
    """``{(name, batch): {"round_medians": [...], "calls": [...]}}``, contenders rotated every round."""
    runners = {name: session.run for name, session in sessions.items()}
    return common.interleaved_rounds(runners, {b: inputs[b] for b in BATCHES}, CALLS_PER_ROUND, rounds)


def render(record: dict) -> str:
    rows = record["rows"]
    fp32 = next(r for r in rows if r["name"] == "fp32")
    table = common.markdown_table(
        ["model", "acc PyTorch (PTQ → QAT)", "acc ORT", "max abs ORT−PyTorch", "file bytes", "session RSS growth",
         "RSS / fp32", "b1 ms", "b1 / fp32", "b64 ms", "b64 / fp32"],
        [[r["name"],
          f"{100 * r['acc_torch']:.2f}%" if r.get("acc_ptq") is None else
          f"{100 * r['acc_ptq']:.2f}% → {100 * r['acc_torch']:.2f}%",
          f"{100 * r['acc_ort']:.2f}%", f"{r['max_abs_diff']:.1e}" if r.get("max_abs_diff") is not None else None,
          f"{r['file_bytes']:,}", f"{r['rss_growth_bytes'] / 2**20:.1f} MiB",
          f"{r['rss_growth_bytes'] / fp32['rss_growth_bytes']:.2f}",
          f"{r['latency'][str(1)]['median_ms']:.3f}", f"{r['latency'][str(1)]['ratio']:.3f}",
          f"{r['latency'][str(64)]['median_ms']:.2f}", f"{r['latency'][str(64)]['ratio']:.3f}"] for r in rows])
    goals = "\n".join(f"- {g}: {v}" for g, v in record["verdicts"].items())
    return f"{table}\n\n{goals}"


def main() -> None:
    args = parse_args()
    started, load_before = time.perf_counter(), common.load_average()
    import numpy as np
    import torch

    import qcompile
    from qcompile.parity import compare_onnx
    from qcompile.runtime import Session
    from qcompile.runtime.memory import session_memory
    from qcompile.runtime.normalisation import normalise

    torch.set_num_threads(1)
    splits = common.mnist()
    model, float_info = float_model(args, splits)
    groups = [int(g) for g in args.groups.split(",")]
    epochs = 0 if args.quick else args.epochs
    rows, paths = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="qcompile-nbits-"))
    compiled = None
    for g in groups:
        name = f"W4g{g}"
        print(f"{name}: compile, {epochs} QAT epoch(s), export", flush=True)
        torch.manual_seed(0)
        compiled = qcompile.compile(model, input_shape=(1, 1, 28, 28), data=splits, w_bits=4, a_bits=None,
                                    group_size=g, bn_reestimate_batches=0, target="exact")
        ptq = compiled.evaluate()
        if epochs:
            compiled.finetune(epochs=epochs, lr=1e-4, optimizer="adam", seed=0, progress=False)
        paths[name] = tmp / f"w4g{g}.onnx"
        compiled.export(paths[name])
        parity = compare_onnx(compiled.deployable(), paths[name], splits.test, splits.mean, splits.std,
                              providers="cpu")
        rows[name] = {"name": name, "group_size": g, "acc_ptq": ptq, "acc_torch": parity["acc_torch"],
                      "acc_ort": parity["acc_ort"], "max_abs_diff": parity["max_abs_diff"],
                      "agreement": parity["agreement"]}
    paths = {"fp32": tmp / "fp32.onnx", **paths}
    compiled.export_float(paths["fp32"])
    parity = compare_onnx(model, paths["fp32"], splits.test, splits.mean, splits.std, providers="cpu")
    rows = {"fp32": {"name": "fp32", "acc_ptq": None, "acc_torch": parity["acc_torch"], "acc_ort": parity["acc_ort"],
                     "max_abs_diff": parity["max_abs_diff"]}, **rows}
    if 32 in groups:
        paths[INT8_A] = tmp / "w4g32-int8a.onnx"
        with_accuracy_level(paths["W4g32"], paths[INT8_A], 4)
        from qcompile.runtime.bench import size_summary  # noqa: F401  (keeps the import cost out of the timing)

        acc = compare_onnx(model, paths[INT8_A], splits.test, splits.mean, splits.std, providers="cpu")
        rows[INT8_A] = {"name": INT8_A, "acc_ptq": None, "acc_torch": rows["W4g32"]["acc_torch"],
                        "acc_ort": acc["acc_ort"], "max_abs_diff": None,
                        "note": "accuracy_level 4: int8 input inside the kernel; not a qcompile export"}

    print("session memory (fresh process each)", flush=True)
    growth, setup = {n: [] for n in paths}, {n: [] for n in paths}
    for _ in range(1 if args.quick else MEMORY_REPEATS):
        for n, p in paths.items():
            measured = session_memory(p, ("CPUExecutionProvider",))
            growth[n].append(measured["rss_growth_bytes"])
            setup[n].append(measured["process_setup_bytes"])

    print("latency (interleaved rounds)", flush=True)
    sessions = {n: Session(p, providers="cpu", intra_op_threads=1) for n, p in paths.items()}
    images = splits.test.x[: max(BATCHES)]
    inputs = {b: np.ascontiguousarray(normalise(images[:b], splits.mean, splits.std)) for b in BATCHES}
    for s in sessions.values():
        for b in BATCHES:
            for _ in range(3):
                s.run(inputs[b])
    timing = interleaved_latency(sessions, inputs, 3 if args.quick else args.rounds)
    for n, row in rows.items():
        row["file_bytes"] = paths[n].stat().st_size
        row["rss_growth_samples"] = growth[n]
        row["rss_growth_bytes"] = int(common.median(growth[n]))
        row["process_setup_samples"] = setup[n]
        row["process_setup_bytes"] = int(common.median(setup[n]))
        row["latency"] = {}
        for b in BATCHES:
            per_round = [m / f for m, f in zip(timing[(n, b)]["round_medians"], timing[("fp32", b)]["round_medians"])]
            row["latency"][str(b)] = {**common.summary(timing[(n, b)]["calls"]), "ratio": common.median(per_round),
                                      "ratio_q1_q3": list(common.quartiles(per_round))}
    fp32, g32 = rows["fp32"], rows.get("W4g32")
    verdicts = {}
    if g32 is not None:
        drop = 100 * (fp32["acc_torch"] - g32["acc_torch"])
        verdicts["W4g32 accuracy drop, points (goal ≤ 1)"] = common.verdict(drop, GOALS["accuracy_drop_points"])
        verdicts["W4g32 latency b1 / fp32 (goal ≤ 0.7)"] = common.verdict(g32["latency"]["1"]["ratio"],
                                                                          GOALS["latency_b1"])
        verdicts["W4g32 session RSS / fp32 (goal ≤ 0.35)"] = common.verdict(
            g32["rss_growth_bytes"] / fp32["rss_growth_bytes"], GOALS["session_rss"])
        with_setup = [r["rss_growth_bytes"] + r["process_setup_bytes"] for r in (g32, fp32)]
        label = (f"for information: session RSS / fp32 with onnxruntime's one-time process set-up "
                 f"({fp32['process_setup_bytes'] / 2**20:.1f} MiB) counted in both")
        verdicts[label] = f"{with_setup[0] / with_setup[1]:.3f}"
    path = common.write_results("transformer_nbits", args, {
        "setup": {"model": MODEL, "float_model": float_info, "qat_epochs": epochs, "groups": groups,
                  "runtime": "qcompile.runtime.Session(path, providers='cpu', intra_op_threads=1)",
                  "rounds": args.rounds, "calls_per_round": CALLS_PER_ROUND, "memory_repeats": MEMORY_REPEATS,
                  "cpu_flags": common.cpu_flags()},
        "rows": list(rows.values()), "verdicts": verdicts,
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
