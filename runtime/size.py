"""How big an exported model is, and how close that is to the information it must carry.

The bound counts each quantized weight at its true code width (``bits·n/8``: a 3-bit layer at 3
bits although ONNX stores it in a 4-bit container) plus the stored bytes of every other tensor
(scales, zero points, biases, float layers, shape constants), wherever it is stored: the main
graph, subgraphs (If/Loop/Scan bodies) or model-local functions. ``file_bytes / bound`` near 1
means packing wastes nothing beyond containers and protobuf framing. Needs ``onnx`` (no torch): an
optional extra of the runtime (``qcompile-runtime[onnx]``), so import this module only where onnx is
available (:func:`qcompile.runtime.bench.size_summary` checks first). The exporter imports it too
(``qcompile.export.size``) to tag the codes it writes.
"""

from __future__ import annotations

import math
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from qcompile.runtime.dithered import DITHER_LOCATION

# metadata written by onnx_passes.lower_decode_weight on each codes initializer
BITS_KEY, ELEMENTS_KEY = "qcompile.bits", "qcompile.elements"

_SUBBYTE_BITS = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT2: 2, TensorProto.UINT2: 2,
                 TensorProto.FLOAT4E2M1: 4}


def _regenerated(t: TensorProto) -> bool:
    """A seeded dither's offsets: external data at :data:`DITHER_LOCATION`, which no file holds."""
    return t.data_location == TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == DITHER_LOCATION for e in t.external_data)


def _stored_bytes(t: TensorProto, elements: int) -> int:
    """Bytes of the payload: ``raw_data`` when present, else what the typed field holds (0 for a tensor the
    runtime regenerates from a seed)."""
    if _regenerated(t):
        return 0
    if t.HasField("raw_data"):
        return len(t.raw_data)
    if t.data_type in _SUBBYTE_BITS:
        return math.ceil(elements * _SUBBYTE_BITS[t.data_type] / 8)
    if t.data_type == TensorProto.STRING:
        return sum(len(s) for s in t.string_data)
    return elements * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def _node_tensors(nodes) -> Iterator[TensorProto]:
    """Constant-node tensors among ``nodes``, and every tensor of their subgraphs (If/Loop/Scan bodies)."""
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _graph_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for graph in attr.graphs:
                    yield from _graph_tensors(graph)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    yield from _node_tensors(graph.node)


def _tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Initializers and Constant tensors of the main graph, its subgraphs and model-local functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graphs(path: Path) -> Iterator[onnx.ModelProto]:
    """The graph of an ONNX file, or every graph of a bundle (a zip of ``<role>.onnx`` members)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".onnx"):
                    yield onnx.load_from_string(z.read(name))
    else:
        yield onnx.load(str(path), load_external_data=False)


def size_report(onnx_path: str | Path) -> dict:
    """``{file_bytes, tensors: [{name, dtype, elements, stored_bytes, bits}], by_dtype: {dtype:
    {count, elements, stored_bytes}}, quantized_bound_bytes, other_bytes, bound_bytes, ratio}``.

    ``elements`` is the logical element count (for bit-packed 1-bit weights, the weights, not the
    bytes: ``qcompile.elements`` where the last byte is padded, else 8 per byte); ``bits`` is the
    code width of a quantized weight, else None.
    """
    path = Path(onnx_path)
    tensors, by_dtype = [], defaultdict(lambda: {"count": 0, "elements": 0, "stored_bytes": 0})
    quantized_bound = other = 0.0
    for t in (t for model in _graphs(path) for t in _tensors(model)):
        meta = {p.key: p.value for p in t.metadata_props}
        dims_elements = math.prod(t.dims)
        bits = int(meta[BITS_KEY]) if BITS_KEY in meta else None
        elements = int(meta.get(ELEMENTS_KEY, 8 * dims_elements if bits == 1 else dims_elements))
        stored = _stored_bytes(t, dims_elements)
        dtype = TensorProto.DataType.Name(t.data_type)
        tensors.append({"name": t.name, "dtype": dtype, "elements": elements, "stored_bytes": stored, "bits": bits})
        row = by_dtype[dtype]
        row["count"] += 1
        row["elements"] += elements
        row["stored_bytes"] += stored
        if bits is None:
            other += stored
        else:
            quantized_bound += bits * elements / 8
    file_bytes = path.stat().st_size
    bound = quantized_bound + other
    return {
        "file_bytes": file_bytes,
        "tensors": tensors,
        "by_dtype": dict(by_dtype),
        "quantized_bound_bytes": quantized_bound,
        "other_bytes": int(other),
        "bound_bytes": bound,
        "ratio": file_bytes / bound if bound else float("inf"),
    }
