"""Universal quantization on MNIST: STE vs UN vs UQ vs UQ+SR, the gap between the model as trained and as exported.

    python benchmarks/uq_mnist.py [--quick] [--seeds 0,1,2] [--epochs 1] [--resume]

Data: ../shared/data/mnist, first 8,000 images train, last 2,000 test (``qcompile.data``). Model:
``examples/mnist_cnn.py:build``, float-pretrained by ``common.float_model`` (cached). Every run starts from
those float weights: ``qcompile.compile`` (calibration on 1,024 training images) → ``finetune`` (Adam 1e-3,
cosine, batch 64, ``--epochs`` epochs (1 by default: the 2-core machine is shared), no distillation, activation ranges frozen after epoch 1, BatchNorm
re-estimated with the deployed weights at the end — library defaults) → ``export`` → onnxruntime.

Grid: weights 2 and 3 bits (uniform symmetric per-channel), activations float or 4-bit (every quantized
layer's input, the network input included), seeds (``--seeds``; the seed sets the init of noise, the data
order and the dither's global seed). Arms:

- **STE**: ``--method ste`` (round, straight-through gradient); exported hard-rounded;
- **UN**: ``--method universal --uq-mode un`` (y + u in training); exported hard-rounded (the paper's UN+Q);
- **UQ**: ``--uq-mode uq`` (⌊y − u⌉ + u with fresh u); exported with the seeded dither (``--uq-export dither``:
  weights Δ(k + u), activations rounded) — the channel it was trained with;
- **UQ+SR**: ``--uq-mode sr`` (r_α(s_α(y) + u), α 1 → 30 geometric); exported hard-rounded (α's limit).

Columns, on the 2,000 test images: *train-mode* accuracy (the model as trained: a training forward, BatchNorm
on the statistics of batches of 500 and every UQ node sampling its channel with fresh noise; mean of 4 draws;
STE has no noise),
*exported* accuracy (the ONNX file in ``qcompile.runtime.Session``), the gap (train-mode − exported), the
largest |ORT − PyTorch| logit, and for the universal arms the *other* deployed form in PyTorch eval (UN and
UQ+SR: the seeded dither, for UN the paper's UN+UQ; UQ: hard rounding) — same weights, BatchNorm re-estimated for that form as ``finetune`` does for the
exported one. ``--quick``: one seed, 2 bits, 20 steps: a smoke
test, not a result.

The JSON is rewritten after every run (``"complete": false`` until the grid is done), seed by seed, so an
interrupted benchmark keeps what it measured; ``--resume`` skips the runs the JSON already holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ARMS = {
    "STE": {"method": "ste"},
    "UN": {"method": "universal", "method_options": {"mode": "un", "export": "deterministic"}},
    "UQ": {"method": "universal", "method_options": {"mode": "uq", "export": "dither"}},
    "UQ+SR": {"method": "universal", "method_options": {"mode": "sr", "export": "deterministic"}},
}
OTHER_FORM = {"deterministic": "dither", "dither": "deterministic"}
QAT = {"lr": 1e-3, "optimizer": "adam", "batch_size": 64, "schedule": "cosine", "device": "cpu"}
NOISE_DRAWS = 4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, 2 bits, 20 steps; JSON marked quick")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/uq_mnist.json)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds [default: 0,1,2]")
    parser.add_argument("--epochs", type=int, default=1, help="QAT epochs per run [default: 1]")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in the JSON, do the rest")
    return parser.parse_args()


def accuracy(model, x, y) -> float:
    import numpy as np
    import torch

    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 500])) for i in range(0, len(x), 500)])
    return float(np.mean(logits.argmax(1).numpy() == y))


def train_mode_accuracy(model, x, y, seed: int) -> float:
    """The model as trained: a training forward (BatchNorm on batch statistics, every UQ node sampling its
    channel; activation ranges stay frozen) on batches of 500, mean over NOISE_DRAWS draws, on a copy."""
    import copy

    import torch

    from qcompile.methods.universal.quantizers import universal_nodes

    draws = NOISE_DRAWS if universal_nodes(model) else 1
    trained = copy.deepcopy(model).train()
    out = []
    for d in range(draws):
        torch.manual_seed(10_000 + 100 * seed + d)
        out.append(accuracy(trained, x, y))
    return statistics.fmean(out)


def other_form_accuracy(model, splits, norm, x, y) -> float | None:
    """Accuracy in PyTorch eval with every universal weight node switched to the other export form and
    BatchNorm re-estimated for it (as ``finetune`` does for the form it exports), on a copy."""
    import copy

    from qcompile.methods.universal.quantizers import UniversalWeightQuantizer
    from qcompile.train.batchnorm_stats import reestimate_batchnorm

    model = copy.deepcopy(model)
    nodes = [m for m in model.modules() if isinstance(m, UniversalWeightQuantizer)]
    if not nodes:
        return None
    for n in nodes:
        n.settings = dataclasses.replace(n.settings, export=OTHER_FORM[n.settings.export], mode="uq")
    reestimate_batchnorm(model, splits.train, mean=norm.mean, std=norm.std)
    return accuracy(model.eval(), x, y)


def run_one(model, splits, arm: str, w_bits: int, a_bits: int | None, seed: int, qat: dict, tmp: Path) -> dict:
    import numpy as np
    import torch

    from qcompile.runtime import Session

    options = dict(ARMS[arm])
    if "method_options" in options:
        options["method_options"] = {**options["method_options"], "seed": seed}
    torch.manual_seed(seed)
    mark = time.perf_counter()
    compiled = common.compile_variant(model, splits, {**options, "w_bits": w_bits, "a_bits": a_bits})
    result = compiled.finetune(progress=False, seed=seed, **qat)
    seconds = time.perf_counter() - mark
    gm = compiled.graph_module.eval()
    session_x = splits.test.x
    path = tmp / f"{arm}-{w_bits}-{a_bits}-{seed}.onnx"
    compiled.export(path)
    session = Session(path, providers="CPUExecutionProvider")
    x = session.normalize(session_x)
    ort_logits = session.predict(session_x, normalize=True)
    with torch.no_grad():
        torch_logits = torch.cat([gm(torch.from_numpy(x[i:i + 500])) for i in range(0, len(x), 500)]).numpy()
    y = splits.test.y
    row = {"arm": arm, "w_bits": w_bits, "a_bits": a_bits, "seed": seed,
           "train_mode_acc": train_mode_accuracy(gm, x, y, seed),
           "export_acc": float(np.mean(ort_logits.argmax(1) == y)),
           "torch_eval_acc": float(np.mean(torch_logits.argmax(1) == y)),
           "max_abs_diff": float(np.max(np.abs(ort_logits.astype(np.float64) - torch_logits))),
           "other_form_acc": other_form_accuracy(gm, splits, compiled.normalization, x, y),
           "file_bytes": path.stat().st_size, "finetune_seconds": round(seconds, 1), "steps": result.steps,
           "history": result.history}
    row["gap"] = row["train_mode_acc"] - row["export_acc"]
    return row


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def render(record: dict) -> str:
    rows = record["rows"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["w_bits"], r["a_bits"], r["arm"]), []).append(r)
    table = []
    for (w, a, arm), rs in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1] or 0, list(ARMS).index(g[0][2]))):
        other = [r["other_form_acc"] for r in rs if r["other_form_acc"] is not None]
        table.append([f"W{w}A{a or 'float'}", arm, len(rs), _ms([r["train_mode_acc"] for r in rs]),
                      _ms([r["export_acc"] for r in rs]), _ms([r["gap"] for r in rs]),
                      f"{max(r['max_abs_diff'] for r in rs):.1e}", _ms(other)])
    return common.markdown_table(
        ["bits", "arm", "seeds", "train-mode acc %", "exported (ORT) acc %", "gap (train − export) pts",
         "max abs ORT−PyTorch", "other form, PyTorch %"], table)


def main() -> None:
    args = parse_args()
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    torch.set_num_threads(1)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    bits = (2,) if args.quick else (2, 3)
    qat = {**QAT, "epochs": 1 if args.quick else args.epochs, **({"max_steps": 20} if args.quick else {})}
    splits = common.mnist()
    model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    out = args.out or common.RESULTS_DIR / "uq_mnist.json"
    rows = json.loads(out.read_text())["rows"] if args.resume and out.exists() else []
    done = {(r["arm"], r["w_bits"], r["a_bits"], r["seed"]) for r in rows}
    grid = [(seed, w, a, arm) for seed in seeds for w in bits for a in (None, 4) for arm in ARMS]

    def save(complete: bool) -> Path:
        return common.write_results("uq_mnist", args, {
            "complete": complete,
            "data": {"spec": "mnist:../shared/data/mnist", "train": len(splits.train), "test": len(splits.test)},
            "float_model": float_info, "qat_recipe": qat, "arms": ARMS, "noise_draws": NOISE_DRAWS, "seeds": seeds,
            "rows": rows,
        }, started, load_before)

    with tempfile.TemporaryDirectory(prefix="qcompile-uq-") as tmp:
        for seed, w_bits, a_bits, arm in grid:
            if (arm, w_bits, a_bits, seed) in done:
                continue
            row = run_one(model, splits, arm, w_bits, a_bits, seed, qat, Path(tmp))
            rows.append(row)
            save(False)
            print(f"W{w_bits}A{a_bits or 'f'} {arm:6s} seed {seed}: train-mode "
                  f"{100 * row['train_mode_acc']:.2f}  export {100 * row['export_acc']:.2f}  "
                  f"other {row['other_form_acc']}  |diff| {row['max_abs_diff']:.1e}  "
                  f"({row['finetune_seconds']:.0f} s, load {common.load_average()})", file=sys.stderr)
    path = save(True)
    common.finish(path, render)


if __name__ == "__main__":
    main()
