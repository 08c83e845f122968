"""Exported ONNX size against its information bound, for W1, W2 and W4 (weights only and with A8).

    python benchmarks/size_bound.py [--quick]

The bound (``qcompile.export.size.size_report``) is Σ bits·n/8 over the quantized weights plus the
stored bytes of every other tensor (scales, zero points, biases, BN-folded per-channel vectors,
shape constants). Goal: file bytes / bound ≤ 1.03. Also reported: the fp32 ONNX of the same model
and the compression ratio fp32 bytes / quantized bytes, and where the bytes above the bound go
(serialized size of each part of the ModelProto), so a miss can be traced to its cause.

Files are exported right after calibration, without QAT: the stored bytes do not depend on the
weight values (raw little-endian containers, no entropy coding), so finetuning would not change them.
W1 uses BWN (binary ±α, the library's standard binary-weight rule). ``--quick`` uses the quick float
recipe; the sizes are the same.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

GOAL = 1.03
VARIANTS = (
    ("W1 (BWN)", {"w_bits": 1, "a_bits": None, "quantizer": "bwn"}),
    ("W1A8 (BWN)", {"w_bits": 1, "a_bits": 8, "quantizer": "bwn"}),
    ("W2", {"w_bits": 2, "a_bits": None}),
    ("W2A8", {"w_bits": 2, "a_bits": 8}),
    ("W4", {"w_bits": 4, "a_bits": None}),
    ("W4A8", {"w_bits": 4, "a_bits": 8}),
)


def anatomy(path: Path) -> dict[str, int]:
    """Serialized bytes of each part of the file: tensor payloads (raw data), tensor framing (names,
    dims, per-tensor metadata), nodes, value_info, metadata_props, and the rest (graph inputs/outputs,
    opsets, producer, protobuf tags of repeated fields)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    g = model.graph
    payload = sum(len(t.raw_data) for t in g.initializer)
    parts = {
        "tensor_payload": payload,
        "tensor_framing": sum(t.ByteSize() for t in g.initializer) - payload,
        "nodes": sum(n.ByteSize() for n in g.node),
        "value_info": sum(v.ByteSize() for v in g.value_info),
        "metadata_props": sum(p.ByteSize() for p in model.metadata_props),
    }
    parts["rest"] = path.stat().st_size - sum(parts.values())
    return parts


def without_value_info(path: Path) -> int:
    """Bytes of the same model re-serialized without ``graph.value_info`` (a diagnostic, not an export)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.graph.value_info[:]
    return model.ByteSize()


def render(record: dict) -> str:
    """The markdown tables of a ``size_bound.json`` record."""
    rows = record["rows"]
    table = common.markdown_table(
        ["export", "file bytes", "bound bytes (weights + other)", "file / bound", f"goal ≤ {GOAL}",
         "fp32 bytes", "fp32 / file"],
        [[r["name"], r["file_bytes"], f"{r['bound_bytes']:.0f} ({r['quantized_bound_bytes']:.0f} + {r['other_bytes']})",
          f"{r['ratio']:.3f}", r["verdict"], r["fp32_bytes"], f"{r['compression_vs_fp32']:.2f}×"] for r in rows])
    parts = ["tensor_payload", "tensor_framing", "nodes", "value_info", "metadata_props", "rest"]
    anatomy_table = common.markdown_table(
        ["export", *parts, "file / bound without value_info"],
        [[r["name"], *(r["anatomy"][p] for p in parts), f"{r['ratio_without_value_info']:.3f}"] for r in rows])
    return f"{table}\n\nWhere the bytes go (serialized bytes per part of the ModelProto):\n\n{anatomy_table}"


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started, load_before = time.perf_counter(), common.load_average()
    from qcompile.export.size import size_report

    splits = common.mnist()
    model, float_info = common.float_model(splits, common.float_recipe(args.quick))
    n_weights = common.weight_count(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qcompile-size-") as tmp:
        compiled = None
        for name, options in VARIANTS:
            compiled = common.compile_variant(model, splits, options)
            path = Path(tmp) / f"{name.split()[0].lower()}.onnx"
            report = compiled.export(path)
            size = size_report(path)
            rows.append({
                "name": name, "options": options, "opset": report.opset, "file_bytes": size["file_bytes"],
                "quantized_bound_bytes": size["quantized_bound_bytes"], "other_bytes": size["other_bytes"],
                "bound_bytes": size["bound_bytes"], "ratio": size["ratio"], "by_dtype": size["by_dtype"],
                "anatomy": anatomy(path),
                "ratio_without_value_info": without_value_info(path) / size["bound_bytes"],
            })
            print(f"{name}: {size['file_bytes']} B, bound {size['bound_bytes']:.0f} B, ratio {size['ratio']:.3f}",
                  file=sys.stderr)
        fp32_path = Path(tmp) / "fp32.onnx"
        compiled.export_float(fp32_path)
        fp32_bytes = fp32_path.stat().st_size
    for row in rows:
        row["fp32_bytes"] = fp32_bytes
        row["compression_vs_fp32"] = fp32_bytes / row["file_bytes"]
        row["verdict"] = common.verdict(row["ratio"], GOAL)

    path = common.write_results("size_bound", args, {
        "goal": {"metric": "file_bytes / bound_bytes", "at_most": GOAL},
        "model": {"spec": "examples/mnist_cnn.py:build", "weights": n_weights, "input_shape": list(common.INPUT_SHAPE)},
        "float_model": float_info, "fp32_bytes": fp32_bytes, "rows": rows,
        "goal_met": all(r["ratio"] <= GOAL for r in rows),
    }, started, load_before)
    common.finish(path, render)


if __name__ == "__main__":
    main()
