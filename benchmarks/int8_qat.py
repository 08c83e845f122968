"""QAT on ``--target ort-int8``: batch-statistics training against training the integer kernels' arithmetic.

    python benchmarks/int8_qat.py [--quick]   (--quick: W8A8, seed 0 only)

The MNIST CNN (``examples/mnist_cnn.py``, float weights from ``common.float_model``; 8,000 train / 2,000
test images), compiled W8A8 and W4A8 for ``target="ort-int8"`` and trained 2 epochs with ``int8_deploy``'s
QAT settings (Adam 1e-3, cosine, distillation 0.5), two arms from the same compiled model:

* ``batch statistics``: BatchNorm on batch statistics throughout, re-estimated after training (the default);
* ``integer epoch 2``: ``freeze_bn_after=1``: the second epoch runs with BatchNorm statistics and activation
  ranges frozen, so its forward is the integer kernels' (int32 bias, float32 multiplier, round half to even,
  saturation) and the statistics are kept after training.

Per run: PyTorch test accuracy, onnxruntime's (the exported file through ``qcompile.runtime``), the largest
logit difference between them, and whether the training-mode forward equals eval's bit for bit on 256 test
images. Seeds (data order) 0 and 1; 2,000 test images, so one image is 0.05 points.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from int8_deploy import QAT  # noqa: E402

ARMS = (("batch statistics", {}), ("integer epoch 2", {"freeze_bn_after": 1}))
WIDTHS = (8, 4)
SEEDS = (0, 1)


def train_forward_equals_eval(compiled, x) -> bool:
    """With BN and ranges frozen (as after ``freeze_bn_after``), training mode computes eval's output?"""
    import torch

    from qcompile.train.batchnorm_stats import freeze_batchnorm

    gm = compiled.graph_module.train()
    for q in compiled.activation_quantizers():
        q.freeze()
    freeze_batchnorm(gm)
    with torch.no_grad():
        trained = gm(x)
        same = torch.equal(trained, gm.eval()(x))
    return bool(same)


def run(model, splits, w_bits: int, seed: int, arm: dict, qat: dict, tmp: Path) -> dict:
    import torch

    import qcompile
    from qcompile.parity import compare_onnx
    from qcompile.runtime.normalisation import normalise

    compiled = qcompile.compile(model, input_shape=common.INPUT_SHAPE, data=splits, w_bits=w_bits, a_bits=8,
                                target="ort-int8")
    started = time.perf_counter()
    compiled.finetune(progress=False, **{**qat, "seed": seed, **arm})
    seconds = time.perf_counter() - started
    path = tmp / f"w{w_bits}-{seed}-{len(arm)}.onnx"
    compiled.export(path)
    norm = compiled.normalization
    parity = compare_onnx(compiled.graph_module, path, splits.test, norm.mean, norm.std, providers="cpu",
                          intra_op_threads=1)
    x = torch.from_numpy(normalise(splits.test.x[:256], norm.mean, norm.std))
    return {"acc": compiled.evaluate(), "ort_acc": parity["acc_ort"], "max_abs_diff": parity["max_abs_diff"],
            "agreement": parity["agreement"], "train_forward_equals_eval": train_forward_equals_eval(compiled, x),
            "train_seconds": round(seconds, 1)}


def render(record: dict) -> str:
    rows = [[r["w_bits"], r["seed"], r["arm"], f"{100 * r['acc']:.2f}",
             "—" if r["ort_acc"] is None else f"{100 * r['ort_acc']:.2f}", f"{r['max_abs_diff']:.1e}",
             r["train_forward_equals_eval"], r["train_seconds"]] for r in record["runs"]]
    return common.markdown_table(["W bits", "seed", "arm", "PyTorch acc %", "ORT acc %", "max |Δlogit|",
                                  "train fwd == eval", "QAT s"], rows)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    torch.set_num_threads(1)
    qat = {**QAT, "epochs": 2}
    splits = common.mnist()
    model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    runs = []
    with tempfile.TemporaryDirectory(prefix="qcompile-int8-qat-") as tmp:
        for w_bits in WIDTHS[:1] if args.quick else WIDTHS:
            for seed in SEEDS[:1] if args.quick else SEEDS:
                for name, arm in ARMS:  # interleaved: both arms per (width, seed)
                    print(f"W{w_bits} seed {seed} {name} ({common.uptime_line()})", file=sys.stderr)
                    runs.append({"w_bits": w_bits, "seed": seed, "arm": name,
                                 **run(model, splits, w_bits, seed, arm, qat, Path(tmp))})
    path = common.write_results("int8_qat", args, {"setup": {"qat": qat, "arms": dict(ARMS)},
                                                   "float_model": float_info, "runs": runs}, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
