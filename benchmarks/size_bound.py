"""Exported ONNX size against its information bound: CIFAR ResNet-20 and the MNIST example CNN, at W1, W2
and W4, weights only and with A8.

    python benchmarks/size_bound.py [--quick]

The bound (``qcompile.export.size.size_report``) is Σ bits·n/8 over the quantized weights plus the
stored bytes of every other tensor (scales, zero points, biases, BN-folded per-channel vectors,
shape constants, the constants of shared decode functions). Goal, for models of at least 250k
weights: file bytes / bound ≤ 1.03 at W4 and W2, ≤ 1.08 at W1; the 103k-weight CNN is reported
against the same numbers for reference. Also reported: the fp32 ONNX of the same model and the
compression ratio fp32 bytes / quantized bytes, and where the bytes above the bound go (serialized
size of each part of the ModelProto), so a miss can be traced to its cause.

Files are exported right after calibration, without QAT: the stored bytes do not depend on the
weight values (raw little-endian containers, no entropy coding), so finetuning would not change them
— except that equal small constants are stored once, so the BatchNorm statistics that become each
layer's bias must differ between layers as they do after training. ResNet-20 (``examples/resnet20.py``,
270,896 weights) gets seeded random weights and BatchNorm statistics, and activation ranges calibrated
on random 3×32×32 images (no download); the CNN is the float model every benchmark trains on MNIST.
W1 uses BWN (binary ±α, the library's standard binary-weight rule); W2 and W4 are uniform symmetric
per-channel. ``--quick`` uses the quick float recipe for the CNN; the sizes are the same.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GOALS = {1: 1.08, 2: 1.03, 4: 1.03}  # file / bound, by weight bits
GOAL_MIN_WEIGHTS = 250_000  # the goal is set for models of at least this many weights
VARIANTS = (
    ("W1 (BWN)", {"w_bits": 1, "a_bits": None, "quantizer": "bwn"}),
    ("W1A8 (BWN)", {"w_bits": 1, "a_bits": 8, "quantizer": "bwn"}),
    ("W2", {"w_bits": 2, "a_bits": None}),
    ("W2A8", {"w_bits": 2, "a_bits": 8}),
    ("W4", {"w_bits": 4, "a_bits": None}),
    ("W4A8", {"w_bits": 4, "a_bits": 8}),
)
RESNET_FILE = common.REPO / "examples" / "resnet20.py"
RESNET_SHAPE = (1, 3, 32, 32)
PARTS = ("tensor_payload", "tensor_framing", "nodes", "functions", "value_info", "metadata_props", "rest")


def anatomy(path: Path) -> dict[str, int]:
    """Serialized bytes of each part of the file: tensor payloads of the main graph (raw data), their
    framing (names, dims, per-tensor metadata), nodes, model-local functions (with their constants),
    value_info, metadata_props, and the rest (graph inputs/outputs, opsets, producer, protobuf tags)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    payload = sum(len(t.raw_data) for t in g.initializer)
    parts = {
        "tensor_payload": payload,
        "tensor_framing": sum(t.ByteSize() for t in g.initializer) - payload,
        "nodes": sum(n.ByteSize() for n in g.node),
        "functions": sum(f.ByteSize() for f in model.functions),
        "value_info": sum(v.ByteSize() for v in g.value_info),
        "metadata_props": sum(p.ByteSize() for p in model.metadata_props),
    }
    parts["rest"] = path.stat().st_size - sum(parts.values())
    return parts


def resnet20_case(seed: int = 0):
    """ResNet-20 with seeded weights and BatchNorm statistics drawn as after training, and random
    CIFAR-sized calibration data (512 train / 128 test images, 10 classes)."""
    import numpy as np
    import torch
    from torch import nn

    from qcompile.data import ArrayDataset, DatasetSplits
    from qcompile.loading import load_model

    torch.manual_seed(seed)
    model = load_model(f"{RESNET_FILE}:build")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    rng = np.random.default_rng(seed)
    x = rng.random((640, *RESNET_SHAPE[1:]), dtype=np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int64)
    splits = DatasetSplits.build("random-cifar", ArrayDataset(x[:512], y[:512]), ArrayDataset(x[512:], y[512:]),
                                 [str(i) for i in range(10)])
    return model.eval(), splits


def fp16_probe(compiled, path: Path, images) -> dict:
    """What storing the per-channel float tensors (scales, biases) in fp16 would save and cost: how many
    values fp16 holds exactly, how many fall below its normal range, and how far ONNX Runtime's output
    moves from PyTorch's when they are rounded to fp16 (a lossless fp16 store needs every value exact)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    tensors = [t for t in model.graph.initializer
               if t.data_type == TensorProto.FLOAT and 1 < int(np.prod(t.dims)) <= 1024]
    values = np.concatenate([numpy_helper.to_array(t).ravel() for t in tensors])
    rounded = values.astype(np.float16).astype(np.float32)
    nonzero = values != 0
    for t in tensors:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16).astype(np.float32), t.name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    with torch.no_grad():
        expected = compiled.deployable().eval()(torch.from_numpy(images)).numpy()
    return {"tensors": len(tensors), "values": int(values.size), "fp16_exact": int((rounded == values).sum()),
            "below_fp16_normal": int((np.abs(values[nonzero]) < np.finfo(np.float16).tiny).sum()),
            "max_relative_rounding": float((np.abs(rounded - values)[nonzero] / np.abs(values[nonzero])).max()),
            "bytes_saved": 2 * int(values.size), "max_abs_output_change": float(np.abs(got - expected).max()),
            "inputs": len(images)}


def measure(model, splits, input_shape, tmp: Path, tag: str, probe: bool = False) -> tuple[list[dict], int]:
    """Export every variant and the fp32 reference; rows and the fp32 file's bytes. ``probe`` adds
    :func:`fp16_probe` to the W1, W4 and W4A8 rows."""
    import qcompile
    from qcompile.export.size import size_report

    rows, compiled = [], None
    for name, options in VARIANTS:
        compiled = qcompile.compile(model, input_shape=input_shape, data=splits, target="exact", **options)
        path = tmp / f"{tag}-{name.split()[0].lower()}.onnx"
        report = compiled.export(path)
        size = size_report(path)
        parts = anatomy(path)
        goal = GOALS[options["w_bits"]]
        rows.append({
            "name": name, "options": options, "opset": report.opset, "file_bytes": size["file_bytes"],
            "quantized_bound_bytes": size["quantized_bound_bytes"], "other_bytes": size["other_bytes"],
            "bound_bytes": size["bound_bytes"], "ratio": size["ratio"], "by_dtype": size["by_dtype"],
            "anatomy": parts, "goal": goal, "verdict": common.verdict(size["ratio"], goal),
            "ratio_without_metadata": (size["file_bytes"] - parts["metadata_props"]) / size["bound_bytes"],
        })
        if probe and name in ("W1 (BWN)", "W4", "W4A8"):
            rows[-1]["fp16_probe"] = fp16_probe(compiled, path, splits.normalize(splits.test.x[:128]))
        print(f"{tag} {name}: {size['file_bytes']} B, bound {size['bound_bytes']:.0f} B, ratio {size['ratio']:.3f}",
              file=sys.stderr)
    fp32_path = tmp / f"{tag}-fp32.onnx"
    compiled.export_float(fp32_path)
    fp32_bytes = fp32_path.stat().st_size
    for row in rows:
        row["fp32_bytes"] = fp32_bytes
        row["compression_vs_fp32"] = fp32_bytes / row["file_bytes"]
    return rows, fp32_bytes


def render(record: dict) -> str:
    """The markdown tables of a ``size_bound.json`` record."""
    out = []
    for case in record["models"]:
        rows = case["rows"]
        applies = case["weights"] >= GOAL_MIN_WEIGHTS
        goal_header = "goal (W1 ≤ 1.08, W2/W4 ≤ 1.03)" + ("" if applies else f", for ≥ {GOAL_MIN_WEIGHTS:,} weights")
        table = common.markdown_table(
            ["export", "file bytes", "bound bytes (weights + other)", "file / bound", goal_header,
             "fp32 bytes", "fp32 / file"],
            [[r["name"], r["file_bytes"], f"{r['bound_bytes']:.0f} ({r['quantized_bound_bytes']:.0f} + {r['other_bytes']})",
              f"{r['ratio']:.3f}", r["verdict"] if applies else f"(reference) {r['verdict']}", r["fp32_bytes"],
              f"{r['compression_vs_fp32']:.2f}×"] for r in rows])
        anatomy_table = common.markdown_table(
            ["export", *PARTS, "file / bound without metadata_props"],
            [[r["name"], *(r["anatomy"][p] for p in PARTS), f"{r['ratio_without_metadata']:.3f}"] for r in rows])
        out.append(f"**{case['label']}** ({case['weights']:,} weights, input {'×'.join(map(str, case['input_shape']))})"
                   f"\n\n{table}\n\nWhere the bytes go (serialized bytes per part of the ModelProto):\n\n{anatomy_table}")
        probes = [(r["name"], r["fp16_probe"]) for r in rows if "fp16_probe" in r]
        if probes:
            out.append("Per-channel float tensors (scales, biases) stored as fp16 instead (not done; see the text):\n\n"
                       + common.markdown_table(
                           ["export", "tensors", "values", "exact in fp16", "below fp16 normal range",
                            "max relative rounding", "payload bytes saved", f"max abs output change (ORT vs PyTorch, "
                            f"{probes[0][1]['inputs']} inputs)"],
                           [[name, p["tensors"], p["values"], p["fp16_exact"], p["below_fp16_normal"],
                             f"{p['max_relative_rounding']:.1e}", p["bytes_saved"], f"{p['max_abs_output_change']:.1e}"]
                            for name, p in probes]))
    return "\n\n".join(out)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    cases = []
    with tempfile.TemporaryDirectory(prefix="qcompile-size-") as tmp:
        model, splits = resnet20_case()
        rows, fp32 = measure(model, splits, RESNET_SHAPE, Path(tmp), "resnet20", probe=True)
        cases.append({"label": "CIFAR ResNet-20", "spec": "examples/resnet20.py:build",
                      "weights": common.weight_count(model), "input_shape": list(RESNET_SHAPE),
                      "float_model": "seeded random weights and BatchNorm statistics; calibration on random images",
                      "fp32_bytes": fp32, "rows": rows})
        splits = common.mnist()
        model, float_info = common.float_model(splits, common.float_recipe(args.quick))
        rows, fp32 = measure(model, splits, common.INPUT_SHAPE, Path(tmp), "mnist_cnn")
        cases.append({"label": "MNIST example CNN", "spec": "examples/mnist_cnn.py:build",
                      "weights": common.weight_count(model), "input_shape": list(common.INPUT_SHAPE),
                      "float_model": float_info, "fp32_bytes": fp32, "rows": rows})
    path = common.write_results("size_bound", args, {
        "goal": {"metric": "file_bytes / bound_bytes", "at_most_by_w_bits": GOALS, "min_weights": GOAL_MIN_WEIGHTS},
        "models": cases,
        "goal_met": all(r["ratio"] <= r["goal"] for c in cases if c["weights"] >= GOAL_MIN_WEIGHTS for r in c["rows"]),
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
