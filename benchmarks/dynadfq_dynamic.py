"""DynaDFQ, a first dynamic-vs-static run on a synthetic pool: accuracy on real MNIST against mean BitOPs.

    python benchmarks/dynadfq_dynamic.py --weights FLOAT.pt --pool POOL.npz [--epochs 2] [--targets 2.5,3,3.5]
        [--bit-weight 1]

The benchmark CNN's float weights and a pool synthesised from them (``qcompile synthesize``); each
variant is compiled with ``--method dynadfq`` on the pool only, trained ``--epochs`` epochs (Adam, lr 1e-4,
distillation α 0.5, batches of 64, seed 0), exported and scored in onnxruntime on the last 2,000 real
MNIST images: static W2A2/W3A3/W4A4 (anchor labels, BitOPs = Σ MACs·b²), and the selector over {2,3,4}
at each target (soft labels, mixup of easy images, the BitOPs regulariser; BitOPs per image from the
runtime's dispatch, the selector's included). Also the bundle's size and ORT latency against static W4A4.
One seed, one pool: a first run, not the issue's benchmark (criteria A–E, ≥ 3 seeds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "dynadfq_dynamic"


def compile_and_score(options: dict, args, splits, out: Path) -> dict:
    import qcompile
    from qcompile.methods.dynadfq import bitops, layer_costs
    from qcompile.runtime.scoring import score

    started = time.perf_counter()
    cm = qcompile.compile(common.MODEL_SPEC, weights=args.weights, input_shape=common.INPUT_SHAPE, method="dynadfq",
                          method_options={**options, "pool": str(args.pool)})
    result = cm.finetune(epochs=args.epochs, lr=1e-4, optimizer="adam", kd_alpha=0.5, batch_size=64, seed=0,
                         progress=False)
    report = cm.export(out)
    scored = score(out, splits, providers="cpu")
    row = {"options": options, "accuracy": scored["accuracy"], "file_bytes": report.file_bytes,
           "pool_test_acc": result.history[-1].get("test_acc"), "seconds": round(time.perf_counter() - started, 1)}
    if "mean_bitops" in scored:
        row.update(mean_bitops=scored["mean_bitops"], mean_bits=scored["mean_bits"],
                   selector_bitops=scored["selector_bitops"], bits_per_layer=scored["bits_per_layer"],
                   configurations=len(scored["configurations"]),
                   top_configurations=sorted(scored["configurations"].items(), key=lambda kv: -kv[1])[:5])
    else:
        row["mean_bitops"] = float(bitops(layer_costs(cm.inspect()["sites"])))
    return row


def latency_ms(path: Path, x: np.ndarray, batch: int, repeats: int = 3) -> float:
    from qcompile.runtime import load

    session = load(path, providers="cpu", intra_op_threads=1)
    session.predict(x[:batch], batch_size=batch)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.predict(x, batch_size=batch)
        times.append((time.perf_counter() - started) * 1e3 / (len(x) / batch))
    return float(np.median(times))


def render(record: dict) -> str:
    rows = [[r["label"], f"{r['mean_bitops'] / 1e6:.1f}", f"{100 * r['accuracy']:.2f}",
             f"{r.get('mean_bits', '—') if isinstance(r.get('mean_bits'), str) else format(r.get('mean_bits', float('nan')), '.2f')}",
             r.get("configurations", 1), r["file_bytes"]] for r in record["rows"]]
    lat = record["latency"]
    return "\n".join([common.markdown_table(["variant", "mean MBitOPs/image", "real MNIST acc %", "mean bits",
                                             "configurations", "file bytes"], rows), "",
                      f"bundle / static W4A4 size: {record['size_ratio']:.3f}; latency dynamic / static W4A4: "
                      f"batch 1 {lat['ratio_b1']:.2f}, batch 64 {lat['ratio_b64']:.2f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--pool", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--targets", default="2.5,3,3.5")
    parser.add_argument("--bit-weight", type=float, default=1.0, help="λ of the BitOPs regulariser")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started, load_before = time.perf_counter(), common.load_average()
    splits = common.mnist()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for b in (2, 3, 4):
            rows.append({"label": f"static W{b}A{b}", **compile_and_score({"bits": str(b)}, args, splits,
                                                                           tmp / f"w{b}.onnx")})
            print(rows[-1], flush=True)
        for t in (float(v) for v in args.targets.split(",")):
            rows.append({"label": f"dynamic {{2,3,4}} T={t:g}",
                         **compile_and_score({"bits": "2,3,4", "target_bitops": t, "bit_weight": args.bit_weight}, args, splits,
                                            tmp / f"d{t:g}.qcz")})
            print(rows[-1], flush=True)
        x = ((splits.test.x - splits.mean[0]) / splits.std[0]).astype(np.float32)  # timing only
        dyn = tmp / f"d{float(args.targets.split(',')[1]):g}.qcz"
        lat = {f"{kind}_b{b}": latency_ms(path, x[:256 if b == 1 else 1024], b)
               for kind, path in (("static_w4", tmp / "w4.onnx"), ("dynamic", dyn)) for b in (1, 64)}
        lat.update(ratio_b1=lat["dynamic_b1"] / lat["static_w4_b1"], ratio_b64=lat["dynamic_b64"] / lat["static_w4_b64"])
        size_ratio = dyn.stat().st_size / (tmp / "w4.onnx").stat().st_size
    path = common.write_results(NAME, args, {"rows": rows, "latency": lat, "size_ratio": size_ratio,
                                             "weights": str(args.weights), "pool": str(args.pool)},
                                started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
