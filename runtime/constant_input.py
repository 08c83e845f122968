"""Specialise an ONNX graph for one value of one input: the input becomes a constant initializer.

Why: the dynamic model graph decodes each layer's weights from its packed codes according to its
``widths`` input, and onnxruntime cannot constant-fold what depends on an input, so the decode ran on
every call. With one configuration's widths baked in as an initializer, the session folds the decode
once, at load, as it does for a static file.

The runtime depends on neither ``onnx`` nor ``protobuf``, so the edit works on the ModelProto wire
format: the graph (ModelProto field 7) is rewritten with the input's ValueInfoProto (GraphProto field
11) dropped and a TensorProto (field 5) appended; every other field is copied byte for byte.
"""

from __future__ import annotations

import numpy as np

from qcompile.runtime.container import protobuf_fields, read_varint

_MODEL_GRAPH, _GRAPH_INITIALIZER, _GRAPH_INPUT = 7, 5, 11  # ModelProto / GraphProto field numbers
_VALUE_INFO_NAME = 1
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 8, 9
_ONNX_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 6, np.dtype(np.int64): 7}  # TensorProto.DataType


def with_constant_input(model: bytes, name: str, value: np.ndarray) -> bytes:
    """The serialized ``model`` with graph input ``name`` replaced by the constant ``value``.

    A ``ValueError`` if the graph has no such input or the dtype has no mapping here.
    """
    value = np.asarray(value)
    if value.dtype not in _ONNX_TYPES:
        raise ValueError(f"constant input {name!r}: dtype {value.dtype} is not one of {sorted(map(str, _ONNX_TYPES))}")
    out, found = bytearray(), False
    for number, span, begin, end in _records(model, 0, len(model)):
        if number == _MODEL_GRAPH and span is not None:
            graph, found = _graph_without_input(model, span, name)
            graph += _length_delimited(_GRAPH_INITIALIZER, _tensor(name, value))
            out += _length_delimited(_MODEL_GRAPH, graph)
        else:
            out += model[begin:end]
    if not found:
        raise ValueError(f"the graph has no input named {name!r}")
    return bytes(out)


def _graph_without_input(model: bytes, span: tuple[int, int], name: str) -> tuple[bytearray, bool]:
    graph, found = bytearray(), False
    target = name.encode("utf-8")
    for number, inner, begin, end in _records(model, *span):
        if number == _GRAPH_INPUT and inner is not None and _name_of(model, inner) == target:
            found = True
            continue
        graph += model[begin:end]
    return graph, found


def _name_of(model: bytes, span: tuple[int, int]) -> bytes | None:
    for number, inner in protobuf_fields(model, *span):
        if number == _VALUE_INFO_NAME and inner is not None:
            return model[slice(*inner)]
    return None


def _records(data: bytes, start: int, end: int):
    """``(field number, payload span or None, field begin, field end)`` of one message's fields."""
    begin = start
    for number, span in protobuf_fields(data, start, end):
        stop = span[1] if span is not None else _field_end(data, begin)
        yield number, span, begin, stop
        begin = stop


def _field_end(data: bytes, begin: int) -> int:
    key, pos = read_varint(data, begin)
    wire = key & 7
    return read_varint(data, pos)[1] if wire == 0 else pos + (8 if wire == 1 else 4)


def _tensor(name: str, value: np.ndarray) -> bytes:
    msg = bytearray()
    for d in value.shape:
        msg += _key(_TENSOR_DIMS, 0) + _encode_varint(int(d))
    msg += _key(_TENSOR_DATA_TYPE, 0) + _encode_varint(_ONNX_TYPES[value.dtype])
    msg += _length_delimited(_TENSOR_NAME, name.encode("utf-8"))
    msg += _length_delimited(_TENSOR_RAW_DATA, np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes())
    return bytes(msg)


def _length_delimited(number: int, payload: bytes | bytearray) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + bytes(payload)


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
