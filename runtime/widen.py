"""Widen packed 4-bit and 2-bit weight initializers to int8 in memory, for onnxruntime's integer kernels.

Why: an ``ort-int8`` artifact (manifest field ``target``) stores its weights packed (INT4/UINT4/INT2/UINT2
codes behind DequantizeLinear), but onnxruntime fuses ``DQ → Conv → Q`` into QLinearConv (and Gemm into
QGemm) only for 8-bit weights. So before the session is built, each such initializer is rewritten as
INT8/UINT8 holding the same codes; the file on disk is never changed.

The edit works on the ModelProto wire format (:mod:`.protobuf_edit`: initializer = GraphProto field 5,
TensorProto ``data_type`` = 2 and ``raw_data`` = 9), copying every other field byte for byte.
"""

from __future__ import annotations

import numpy as np

from qcompile.runtime.container import read_varint
from qcompile.runtime.protobuf_edit import (GRAPH_INITIALIZER, TENSOR_DATA_TYPE, TENSOR_DIMS, TENSOR_RAW_DATA,
                                            length_delimited, records, varint_field, varint_value, with_graph)

TARGET_FIELD, EXACT, ORT_INT8 = "target", "exact", "ort-int8"

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
    count = 0

    def edit(data: bytes, span: tuple[int, int]) -> bytearray:
        nonlocal count
        graph = bytearray()
        for number, inner, begin, end in records(data, *span):
            widened = _widened(data, inner) if number == GRAPH_INITIALIZER and inner else None
            count += widened is not None
            graph += data[begin:end] if widened is None else length_delimited(GRAPH_INITIALIZER, widened)
        return graph

    return with_graph(model, edit), count


def _widened(model: bytes, span: tuple[int, int]) -> bytes | None:
    """The TensorProto at ``span`` rewritten as 8-bit, or None if it holds no packed codes in ``raw_data``."""
    dims, data_type, raw, kept = [], None, None, bytearray()
    for number, inner, begin, end in records(model, *span):
        if number == TENSOR_DATA_TYPE and inner is None:
            data_type = varint_value(model, begin)
        elif number == TENSOR_RAW_DATA and inner is not None:
            raw = model[inner[0]:inner[1]]
        else:
            kept += model[begin:end]
        if number == TENSOR_DIMS:
            dims += _dims(model, begin, inner)
    if data_type not in _PACKED or raw is None:
        return None
    bits, signed, wide = _PACKED[data_type]
    codes = unpack_codes(raw, int(np.prod(dims, dtype=np.int64)), bits, signed)
    return bytes(kept + varint_field(TENSOR_DATA_TYPE, wide) + length_delimited(TENSOR_RAW_DATA, codes.tobytes()))


def _dims(model: bytes, begin: int, packed: tuple[int, int] | None) -> list[int]:
    if packed is None:  # one varint per dim
        return [varint_value(model, begin)]
    values, pos = [], packed[0]
    while pos < packed[1]:
        value, pos = read_varint(model, pos)
        values.append(value)
    return values
