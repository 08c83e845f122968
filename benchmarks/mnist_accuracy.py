"""MNIST accuracy: float, then STE QAT at W8A8, W4A4, W2A2, W1 (DoReFa) and W1 (BWN), in PyTorch and ORT.

    python benchmarks/mnist_accuracy.py [--quick]

Data: ../shared/data/mnist, first 8,000 images train, last 2,000 test (``qcompile.data``).
Float: ``examples/mnist_cnn.py:build`` trained from scratch by ``common.float_model`` (Adam 1e-3,
cosine, batch 64, 4 epochs; cached under benchmarks/.cache/). Every quantized row starts from those
float weights and gets the same recipe (``QAT`` below): ``qcompile.compile`` (calibration on 1,024
training images) → ``finetune`` (STE; knowledge distillation from the float model; activation
ranges follow an EMA during epoch 1, then freeze; BatchNorm statistics re-estimated on 64 training
batches at the end — all library defaults) → ``deployable()`` → ``export``.

Quantization: every Conv/Linear is quantized (first and last layers included, the library
default), and with aN so is every quantized layer's input, the network input included (signed).
W8A8, W4A4, W2A2: uniform symmetric per-channel weights. The two W1 rows keep float activations:
DoReFa (k=1: sign, one per-tensor scale E|W|) and BWN (±α, α = mean|W| per tensor).

Columns: accuracy of the deployable PyTorch model (BN folded, what the file computes) and of the
exported file run by ``qcompile.runtime.Session.predict(x, normalize=True)`` (the artifact's own
normalisation), their largest |logit difference| and top-1 agreement. The float row compares the
float model with its fp32 ONNX (``export_float``, inputs normalised by the script). ``--quick``
trains 40 float steps and 20 QAT steps per row: a smoke test, not a result.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

QAT = {"epochs": 3, "lr": 1e-3, "optimizer": "adam", "batch_size": 64, "kd_alpha": 0.5, "kd_temperature": 4.0,
       "seed": 0, "schedule": "cosine", "device": "cpu"}
QUICK_STEPS = 20
VARIANTS = (
    ("W8A8", {"w_bits": 8, "a_bits": 8}),
    ("W4A4", {"w_bits": 4, "a_bits": 4}),
    ("W2A2", {"w_bits": 2, "a_bits": 2}),
    ("W1 DoReFa (float act.)", {"w_bits": 1, "a_bits": None, "quantizer": "dorefa"}),
    ("W1 BWN (float act.)", {"w_bits": 1, "a_bits": None, "quantizer": "bwn"}),
)


def logits_torch(model, x):
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + 500])) for i in range(0, len(x), 500)]).numpy()


def compare(torch_logits, ort_logits, labels) -> dict:
    import numpy as np

    top_t, top_o = torch_logits.argmax(1), ort_logits.argmax(1)
    return {"acc_torch": float(np.mean(top_t == labels)), "acc_ort": float(np.mean(top_o == labels)),
            "max_abs_diff": float(np.max(np.abs(ort_logits.astype(np.float64) - torch_logits))),
            "top1_agreement": float(np.mean(top_t == top_o))}


def pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.2f}"


def render(record: dict) -> str:
    """The markdown tables of a ``mnist_accuracy.json`` record: final accuracies, then per epoch."""
    rows = record["rows"]
    final = common.markdown_table(
        ["model", "acc PyTorch %", "acc ORT %", "max abs logit diff", "top-1 agreement %", "file bytes",
         "finetune s"],
        [[r["name"], pct(r["acc_torch"]), pct(r["acc_ort"]), f"{r['max_abs_diff']:.2e}", pct(r["top1_agreement"]),
          r["file_bytes"], None if r["finetune_seconds"] is None else f"{r['finetune_seconds']:.0f}"] for r in rows])
    trained = [r for r in rows if r["history"]]
    if not trained:  # --quick stops inside the first epoch: no per-epoch records
        return final
    epochs = max(len(r["history"]) for r in trained)
    per_epoch = common.markdown_table(
        ["model", *(f"epoch {e + 1} train / test %" for e in range(epochs)), "test % when finetune returns"],
        [[r["name"], *(f"{100 * h['train_acc']:.1f} / {pct(h['test_acc'])}" for h in r["history"]),
          pct(r["qat_acc_torch"])] for r in trained])
    return (f"{final}\n\nPer epoch (train: running mean in train mode; test: eval mode after the epoch; the last "
            f"column is after finetune's post-training steps, e.g. BatchNorm re-estimation):\n\n{per_epoch}")


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    from qcompile.runtime import Session
    from qcompile.runtime.normalisation import normalise

    splits = common.mnist()
    model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    qat = {**QAT, **({"epochs": 1, "max_steps": QUICK_STEPS} if args.quick else {})}
    test_x, test_y = splits.test.x, splits.test.y
    rows = []
    with tempfile.TemporaryDirectory(prefix="qcompile-mnist-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        compiled = None
        for name, options in VARIANTS:
            print(f"{name}: compile, calibrate, finetune {qat}", file=sys.stderr)
            mark = time.perf_counter()
            torch.manual_seed(qat["seed"])
            compiled = common.compile_variant(model, splits, options)
            result = compiled.finetune(progress=sys.stderr.isatty(), **qat)
            finetune_seconds = time.perf_counter() - mark
            path = Path(tmp) / f"{len(rows)}.onnx"
            compiled.export(path)
            session = Session(path, providers="CPUExecutionProvider")
            x = session.normalize(test_x)  # the same float32 inputs for both sides
            row = {"name": name, "options": options, "qat_acc_torch": compiled.evaluate(),
                   **compare(logits_torch(compiled.deployable(), x), session.predict(test_x, normalize=True), test_y),
                   "file_bytes": path.stat().st_size, "finetune_seconds": finetune_seconds,
                   "steps": result.steps, "history": result.history}
            rows.append(row)
            print(f"{name}: torch {100 * row['acc_torch']:.2f}%  ort {100 * row['acc_ort']:.2f}%  "
                  f"max|diff| {row['max_abs_diff']:.2e}  ({finetune_seconds:.0f} s, load {common.load_average()})",
                  file=sys.stderr)
        compiled.export_float(fp32_path)
        x = normalise(test_x, splits.mean, splits.std)
        fp32 = Session(fp32_path, providers="CPUExecutionProvider")
        float_row = {"name": "float (fp32)", "options": None, "qat_acc_torch": None,
                     **compare(logits_torch(model, x), fp32.predict(x, normalize=False), test_y),
                     "file_bytes": fp32_path.stat().st_size, "finetune_seconds": None, "steps": float_info.get("steps"),
                     "history": None}
    rows.insert(0, float_row)

    path = common.write_results("mnist_accuracy", args, {
        "data": {"spec": "mnist:../shared/data/mnist", "train": len(splits.train), "test": len(splits.test),
                 "mean": splits.mean, "std": splits.std},
        "float_model": float_info, "qat_recipe": qat,
        "policy": {"first_layer": "quantize", "last_layer": "quantize", "w1_activations": "float",
                   "freeze_act_after_epochs": 1, "calibration_images": 1024,
                   "bn_reestimate_batches": "library default (64 at the time of writing)"},
        "rows": rows,
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
