"""Two side checks of the DynaDFQ benchmark: why W3A3 fails on a pool, and where batch-1 dispatch time goes.

    python benchmarks/dynadfq_diagnosis.py      # after dynadfq_benchmark.py pools/arms/dynamic

1. W3A3 without fine-tuning (PyTorch, last 2,000 MNIST images): weights-only W3 on pool (e) with the float
   BatchNorm statistics; W3A3 calibrated on real images with the float statistics and with them
   re-estimated on real images — which of weights, activations and BatchNorm loses the accuracy.
2. Batch-1 ``predict`` of the static W4A4 file and of the T = 3, λ = 10 bundle (seed 0), median µs of
   2,000 calls: on one image (one configuration), cycling over 64 images (all configurations they pick),
   and the selector call alone. Writes ``benchmarks/results/dynadfq_diagnosis.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import dynadfq_benchmark_runs as runs  # noqa: E402


def w3a3_checks(setup) -> dict:
    import torch

    import qcompile

    mean, std = setup.norm
    x, y = torch.from_numpy(setup.test_inputs()), setup.splits.test.y

    def accuracy(cm) -> float:
        with torch.no_grad():
            return 100 * float((cm.graph_module.eval()(x).argmax(1).numpy() == y).mean())

    def compile3(a_bits, pool: bool, **kw):
        options = {"bits": "3", **({"pool": str(setup.pool_path("dynadfq"))} if pool else {})}
        return qcompile.compile(common.MODEL_SPEC, weights=setup.weights, input_shape=common.INPUT_SHAPE,
                                method="dynadfq", a_bits=a_bits, method_options=options, mean=(mean,), std=(std,),
                                data=None if pool else setup.splits, **kw)

    weights_only = compile3(None, pool=True)
    weights_only.calibrate()
    return {"W3 weights only, pool (e), float BN": accuracy(weights_only),
            "W3A3 ranges on real images, float BN": accuracy(compile3(3, False, bn_reestimate_batches=0)),
            "W3A3 ranges on real images, BN re-estimated on them": accuracy(compile3(3, False))}


def dispatch_profile(setup) -> dict:
    from qcompile.runtime import load

    x = setup.test_inputs()[:64]
    static = load(setup.cache / "dynadfq-W4A4-s0.onnx", providers="cpu", intra_op_threads=1)
    dynamic = load(setup.cache / "dynadfq-dyn-T3-l10-s0.qcz", providers="cpu", intra_op_threads=1)
    for i in range(64):
        static.predict(x[i:i + 1], batch_size=1)
        dynamic.predict(x[i:i + 1], batch_size=1)

    def median_us(call, cycle: bool, n: int = 2000) -> float:
        times = []
        for k in range(n):
            xi = x[k % 64:k % 64 + 1] if cycle else x[:1]
            start = time.perf_counter_ns()
            call(xi)
            times.append(time.perf_counter_ns() - start)
        return round(float(np.median(times)) / 1e3, 1)

    out = {"configurations_in_64_images": int(len(np.unique(dynamic.choose(x), axis=0)))}
    for label, cycle in (("one image", False), ("cycling over 64 images", True)):
        out[f"static predict, {label}"] = median_us(lambda xi: static.predict(xi, batch_size=1), cycle)
        out[f"dynamic predict, {label}"] = median_us(lambda xi: dynamic.predict(xi, batch_size=1), cycle)
    out["selector call (choose)"] = median_us(dynamic.choose, True)
    return out


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    setup = runs.Setup.create()
    payload = {"w3a3_no_finetune_acc": w3a3_checks(setup), "batch1_dispatch_us": dispatch_profile(setup)}
    path = common.write_results("dynadfq_diagnosis", args, payload, started, load_before)
    common.finish(path, lambda r: "\n".join(f"{k}: {v}" for part in ("w3a3_no_finetune_acc", "batch1_dispatch_us")
                                            for k, v in r[part].items()))


if __name__ == "__main__":
    main()
