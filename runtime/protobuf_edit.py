"""Edit a serialized ONNX ModelProto on the protobuf wire format, copying untouched fields byte for byte.

Why: the runtime depends on neither ``onnx`` nor ``protobuf``, yet specialises graphs before a session is
built (an input made constant, :mod:`.constant_input`; packed weights widened, :mod:`.widen`). Those edits
share this reading (:func:`records`) and writing (:func:`length_delimited`, :func:`varint_field`) of fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from qcompile.runtime.container import protobuf_fields, read_varint

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER, GRAPH_INPUT = 5, 11  # GraphProto.initializer, .input
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 8, 9  # TensorProto fields

Span = tuple[int, int]


def records(data: bytes, start: int, end: int) -> Iterator[tuple[int, Span | None, int, int]]:
    """``(field number, payload span or None, field begin, field end)`` of one message's fields."""
    begin = start
    for number, span in protobuf_fields(data, start, end):
        stop = span[1] if span is not None else _field_end(data, begin)
        yield number, span, begin, stop
        begin = stop


def varint_value(data: bytes, begin: int) -> int:
    """The value of the varint field (wire type 0) that starts at ``begin``."""
    return read_varint(data, read_varint(data, begin)[1])[0]


def with_graph(model: bytes, edit: Callable[[bytes, Span], bytes | bytearray]) -> bytes:
    """``model`` with its main graph (ModelProto field 7) replaced by ``edit(model, graph span)``."""
    out = bytearray()
    for number, span, begin, end in records(model, 0, len(model)):
        out += length_delimited(MODEL_GRAPH, edit(model, span)) if number == MODEL_GRAPH and span else model[begin:end]
    return bytes(out)


def _field_end(data: bytes, begin: int) -> int:
    key, pos = read_varint(data, begin)
    wire = key & 7
    return read_varint(data, pos)[1] if wire == 0 else pos + (8 if wire == 1 else 4)


def length_delimited(number: int, payload: bytes | bytearray) -> bytes:
    return key(number, 2) + encode_varint(len(payload)) + bytes(payload)


def varint_field(number: int, value: int) -> bytes:
    return key(number, 0) + encode_varint(value)


def key(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
