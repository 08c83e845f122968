"""Widen packed 4-bit and 2-bit weight initializers to int8 in memory, for onnxruntime's integer kernels.

Why: an ``ort-int8`` artifact (manifest field ``target``) stores its weights packed (INT4/UINT4/INT2/UINT2
codes behind DequantizeLinear), but onnxruntime fuses ``DQ → Conv → Q`` into QLinearConv (and Gemm into
QGemm) only for 8-bit weights. So before the session is built, each such initializer is rewritten as
INT8/UINT8 holding the same codes; the file on disk is never changed.

The runtime depends on neither ``onnx`` nor ``protobuf``: the edit works on the ModelProto wire format
(graph = ModelProto field 7, initializer = GraphProto field 5, TensorProto ``data_type`` = 2 and
``raw_data`` = 9), copying every other field byte for byte.
"""

from __future__ import annotations

import numpy as np

from qcompile.runtime.constant_input import _key, _length_delimited, _encode_varint, _records
from qcompile.runtime.container import read_varint

TARGET_FIELD, EXACT, ORT_INT8 = "target", "exact", "ort-int8"

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_RAW_DATA = 1, 2, 9
_UINT8, _INT8 = 2, 3
# TensorProto.DataType of packed codes → (bits, signed, widened type)
_PACKED = {21: (4, False, _UINT8), 22: (4, True, _INT8), 25: (2, False, _UINT8), 26: (2, True, _INT8)}


def target_of(extra) -> str:
    """The artifact's target from its manifest's extra fields (absent: ``exact``)."""
    return extra.get(TARGET_FIELD, EXACT)


def unpack_codes(raw: bytes, count: int, bits: int, signed: bool) -> np.ndarray:
    """``count`` codes packed LSB-first (ONNX's INT4/INT2 layout) as int8/uint8 values."""
    per_byte = 8 // bits
    packed = np.frombuffer(raw, dtype=np.uint8)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    codes = ((packed[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:count]
    if len(codes) != count:
        raise ValueError(f"{len(raw)} bytes hold fewer than {count} {bits}-bit codes")
    if not signed:
        return codes.astype(np.uint8)
    return ((codes.astype(np.int16) ^ (1 << (bits - 1))) - (1 << (bits - 1))).astype(np.int8)


def widen_initializers(model: bytes) -> tuple[bytes, int]:
    """``model`` with every packed 4/2-bit initializer of its main graph widened to 8 bits; and how many."""
    out, count = bytearray(), 0
    for number, span, begin, end in _records(model, 0, len(model)):
        if number == _MODEL_GRAPH and span is not None:
            graph = bytearray()
            for inner_number, inner, b, e in _records(model, *span):
                widened = _widened(model, inner) if inner_number == _GRAPH_INITIALIZER and inner else None
                count += widened is not None
                graph += model[b:e] if widened is None else _length_delimited(_GRAPH_INITIALIZER, widened)
            out += _length_delimited(_MODEL_GRAPH, graph)
        else:
            out += model[begin:end]
    return bytes(out), count


def _widened(model: bytes, span: tuple[int, int]) -> bytes | None:
    """The TensorProto at ``span`` rewritten as 8-bit, or None if it holds no packed codes in ``raw_data``."""
    dims, data_type, raw, kept = [], None, None, bytearray()
    for number, inner, begin, end in _records(model, *span):
        if number == _TENSOR_DATA_TYPE and inner is None:
            data_type = read_varint(model, read_varint(model, begin)[1])[0]
        elif number == _TENSOR_RAW_DATA and inner is not None:
            raw = model[inner[0]:inner[1]]
        else:
            kept += model[begin:end]
        if number == _TENSOR_DIMS:
            dims += _dims(model, begin, inner)
    if data_type not in _PACKED or raw is None:
        return None
    bits, signed, wide = _PACKED[data_type]
    codes = unpack_codes(raw, int(np.prod(dims, dtype=np.int64)), bits, signed)
    return bytes(kept + _key(_TENSOR_DATA_TYPE, 0) + _encode_varint(wide)
                 + _length_delimited(_TENSOR_RAW_DATA, codes.tobytes()))


def _dims(model: bytes, begin: int, packed: tuple[int, int] | None) -> list[int]:
    if packed is None:  # one varint per dim
        return [read_varint(model, read_varint(model, begin)[1])[0]]
    values, pos = [], packed[0]
    while pos < packed[1]:
        value, pos = read_varint(model, pos)
        values.append(value)
    return values
