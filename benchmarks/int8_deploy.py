"""Integer-kernel deployment: ``--target ort-int8`` against fp32 and onnxruntime's own int8, CPU, one thread.

    python benchmarks/int8_deploy.py [--quick]

Two models: the MNIST CNN (``examples/mnist_cnn.py``, float weights from ``common.float_model``; 8,000
train / 2,000 test images) and the CIFAR ResNet-20 (``examples/resnet20.py``). CIFAR is not on this
machine, so ResNet-20 follows ``size_bound.resnet20_case``: seeded weights, BatchNorm statistics drawn as
after training, random CIFAR-sized images (512 calibrate, 128 test); its latency and size are real, its
accuracy is not measured.

Contenders, every file run by onnxruntime 1 thread (``intra_op_num_threads=1``, spinning off):

* ``fp32``: ``CompiledModel.export_float``, in a plain ORT session (all optimisations);
* ``ORT int8``: ``quant_pre_process`` then ``quantize_static`` (QDQ, u8 activations, s8 per-channel
  weights, MinMax) calibrated on the same training images qcompile calibrates on, plain ORT session;
* ``W8A8 ort-int8`` / ``W4A8 ort-int8``: qcompile, ``target="ort-int8"``, through ``qcompile.runtime.Session``;
* ``W8A8 exact``: qcompile's exact target, for reference.

MNIST rows are trained: qcompile rows 1 epoch of STE QAT (``QAT`` below) from the float weights; ORT's is
post-training. ResNet-20 rows are calibrated only. Timing: ``ROUNDS`` rounds, each running every contender
(order rotated) for a burst at batch 1 and 64; the ratio is the median over rounds of the per-round
median ratio. Goals (ResNet-20, W8A8 and W4A8 ort-int8): latency at batch 64 ≤ 0.55× fp32 and ≤ 0.95×
ORT int8; file ≤ 0.9× ORT int8's; (MNIST) accuracy ≥ ORT int8's.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import size_bound  # noqa: E402

BATCHES = (1, 64)
CALLS_PER_ROUND = {1: 20, 64: 3}
GOALS = {"b64_vs_fp32": 0.55, "b64_vs_ort_int8": 0.95, "file_vs_ort_int8": 0.9}
GOAL_ROWS = ("W8A8 ort-int8", "W4A8 ort-int8")
QAT = {"epochs": 1, "lr": 1e-3, "optimizer": "adam", "batch_size": 64, "kd_alpha": 0.5, "kd_temperature": 4.0,
       "seed": 0, "schedule": "cosine", "device": "cpu"}
VARIANTS = (
    ("W8A8 ort-int8", {"w_bits": 8, "a_bits": 8, "target": "ort-int8"}),
    ("W4A8 ort-int8", {"w_bits": 4, "a_bits": 8, "target": "ort-int8"}),
    ("W8A8 exact", {"w_bits": 8, "a_bits": 8, "target": "exact"}),
)
CALIBRATION_IMAGES = 1024  # what qcompile's calibration reads: 16 batches of 64, in order


def ort_options(optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return options


def optimised_ops(model, tmp: Path, integer: bool = False) -> str:
    """The op types onnxruntime runs after optimisation (``optimized_model_filepath``), counted."""
    import onnx
    import onnxruntime as ort

    from qcompile.runtime.engine import session_options

    out = tmp / "optimised.onnx"
    if isinstance(model, bytes):  # a qcompile file: the runtime's own options and in-memory widening
        options = session_options(1, False, integer)
        options.optimized_model_filepath = str(out)
    else:
        options = ort_options(out)
    ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                         providers=["CPUExecutionProvider"])
    counts = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    return ", ".join(f"{op}×{n}" if n > 1 else op for op, n in counts.most_common())


def ort_int8(fp32: Path, out: Path, images) -> None:
    """onnxruntime's own post-training int8: pre-processing, then static QDQ quantization."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(out.stem + "-pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    name = onnx.load(str(pre)).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: np.ascontiguousarray(images[i:i + 32])} for i in range(0, len(images), 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)


def build_case(label: str, model, splits, shape, qat: dict | None, tmp: Path, quick: bool) -> dict:
    """Export every contender of one model; returns runners, files, ops and accuracies."""
    import numpy as np
    import onnxruntime as ort

    import qcompile
    from qcompile.runtime import Session
    from qcompile.runtime.normalisation import normalise

    files, runners, notes = {}, {}, {}
    compiled = None
    for name, options in VARIANTS:
        print(f"{label}: {name}: compile{' + QAT' if qat else ''} ({common.uptime_line()})", file=sys.stderr)
        compiled = qcompile.compile(model, input_shape=shape, data=splits, **options)
        notes[name] = {"acc_before_qat": compiled.metrics().get("acc") if qat else None}
        if qat:
            compiled.finetune(progress=False, **qat)
        files[name] = tmp / f"{label}-{name.replace(' ', '-')}.onnx"
        compiled.export(files[name])
        session = Session(files[name], providers="cpu", intra_op_threads=1)
        runners[name] = session.run
    norm = compiled.normalization
    files["fp32"] = tmp / f"{label}-fp32.onnx"
    compiled.export_float(files["fp32"])
    calibration = normalise(splits.train.x[:CALIBRATION_IMAGES], norm.mean, norm.std)
    files["ORT int8"] = tmp / f"{label}-ort-int8.onnx"
    ort_int8(files["fp32"], files["ORT int8"], calibration)
    for name in ("fp32", "ORT int8"):
        session = ort.InferenceSession(str(files[name]), ort_options(), providers=["CPUExecutionProvider"])
        runners[name] = (lambda s, n: lambda x: s.run(None, {n: x})[0])(session, session.get_inputs()[0].name)
    order = ["fp32", "ORT int8", *(n for n, _ in VARIANTS)]
    x_test = normalise(splits.test.x, norm.mean, norm.std)
    rows = {}
    for name in order:
        integer = "ort-int8" in name
        model_arg = files[name] if name in ("fp32", "ORT int8") else _runtime_bytes(files[name], integer)
        logits = np.concatenate([runners[name](x_test[i:i + 256]) for i in range(0, len(x_test), 256)])
        rows[name] = {"file_bytes": files[name].stat().st_size, "ops": optimised_ops(model_arg, tmp, integer),
                      "acc": float((logits.argmax(1) == splits.test.y).mean()) if qat else None,
                      **notes.get(name, {})}
    inputs = {b: normalise(splits.test.x[:b], norm.mean, norm.std) for b in BATCHES}
    return {"label": label, "order": order, "runners": runners, "rows": rows, "inputs": inputs}


def _runtime_bytes(path: Path, integer: bool) -> bytes:
    from qcompile.runtime.widen import widen_initializers

    data = path.read_bytes()
    return widen_initializers(data)[0] if integer else data


def time_case(case: dict, rounds: int, warmup: int) -> None:
    """Interleaved timing; adds latency figures and ratios to ``case['rows']``."""
    names, runners, inputs = case["order"], case["runners"], case["inputs"]
    for name in names:
        for b in BATCHES:
            for _ in range(warmup):
                runners[name](inputs[b])
    timing = common.interleaved_rounds({n: runners[n] for n in names}, {b: inputs[b] for b in BATCHES},
                                       CALLS_PER_ROUND, rounds)
    medians = {key: value["round_medians"] for key, value in timing.items()}
    for name in names:
        row = case["rows"][name]
        for b in BATCHES:
            row[f"b{b}_median_ms"] = common.median(medians[(name, b)])
            for ref, key in (("fp32", "fp32"), ("ORT int8", "ort_int8")):
                ratios = [m / f for m, f in zip(medians[(name, b)], medians[(ref, b)])]
                row[f"b{b}_vs_{key}"] = common.median(ratios)
                row[f"b{b}_vs_{key}_q1_q3"] = list(common.quartiles(ratios))
        row["file_vs_ort_int8"] = row["file_bytes"] / case["rows"]["ORT int8"]["file_bytes"]


def verdicts(case: dict) -> dict:
    rows, out = case["rows"], {}
    for name in GOAL_ROWS:
        row = rows[name]
        out[name] = {key: common.verdict(row[key], goal) for key, goal in GOALS.items()}
        if row["acc"] is not None:
            ref = rows["ORT int8"]["acc"]
            out[name]["acc_vs_ort_int8"] = (f"met ({100 * row['acc']:.2f} % ≥ {100 * ref:.2f} %)" if row["acc"] >= ref
                                            else f"missed by {100 * (ref - row['acc']):.2f} points")
    return out


def render(record: dict) -> str:
    parts = []
    for case in record["cases"]:
        table = common.markdown_table(
            ["model", "b1 ÷ fp32", "b64 ÷ fp32", "b1 ÷ ORT int8", "b64 ÷ ORT int8", "b1 / b64 ms", "file bytes",
             "÷ ORT int8", "accuracy", "ops after ORT optimisation"],
            [[name, f"{r['b1_vs_fp32']:.2f}", f"{r['b64_vs_fp32']:.2f}", f"{r['b1_vs_ort_int8']:.2f}",
              f"{r['b64_vs_ort_int8']:.2f}", f"{r['b1_median_ms']:.3f} / {r['b64_median_ms']:.2f}",
              f"{r['file_bytes']:,}", f"{r['file_vs_ort_int8']:.2f}",
              "—" if r["acc"] is None else f"{100 * r['acc']:.2f} %", r["ops"]] for name, r in case["rows"].items()])
        goals = "\n".join(f"- {name}: " + "; ".join(f"{k} {v}" for k, v in v_.items())
                          for name, v_ in case["verdicts"].items())
        parts.append(f"### {case['label']}\n\n{table}\n\n{goals}")
    return "\n\n".join(parts)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    import torch

    torch.set_num_threads(1)
    rounds, warmup = (4, 3) if args.quick else (100, 20)
    qat = {**QAT, **({"max_steps": 20} if args.quick else {})}
    splits = common.mnist()
    cnn, float_info = common.float_model(splits, common.float_recipe(args.quick))
    resnet, resnet_splits = size_bound.resnet20_case()
    cases = []
    with tempfile.TemporaryDirectory(prefix="qcompile-int8-") as tmp:
        for label, model, data, shape, train in (
                ("MNIST CNN", cnn, splits, common.INPUT_SHAPE, qat),
                ("ResNet-20 (random weights and images)", resnet, resnet_splits, size_bound.RESNET_SHAPE, None)):
            case = build_case(label, model, data, shape, train, Path(tmp), args.quick)
            print(f"{label}: timing {rounds} rounds ({common.uptime_line()})", file=sys.stderr)
            time_case(case, rounds, warmup)
            case["verdicts"] = verdicts(case)
            cases.append({k: case[k] for k in ("label", "rows", "verdicts")})
    path = common.write_results("int8_deploy", args, {
        "setup": {"threads": 1, "rounds": rounds, "warmup_calls": warmup, "calls_per_round": CALLS_PER_ROUND,
                  "qat": qat, "ort_int8": "quant_pre_process + quantize_static(QDQ, QUInt8 activations, QInt8 "
                                          "per-channel weights, MinMax), calibrated on the first "
                                          f"{CALIBRATION_IMAGES} training images",
                  "goals": GOALS},
        "float_model": float_info, "cases": cases}, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
