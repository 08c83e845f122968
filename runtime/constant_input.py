"""Specialise an ONNX graph for one value of one input: the input becomes a constant initializer.

Why: the dynamic model graph decodes each layer's weights from its packed codes according to its
``widths`` input, and onnxruntime cannot constant-fold what depends on an input, so the decode ran on
every call. With one configuration's widths baked in as an initializer, the session folds the decode
once, at load, as it does for a static file.

The edit works on the ModelProto wire format (:mod:`.protobuf_edit`): the graph is rewritten with the
input's ValueInfoProto (GraphProto field 11) dropped and a TensorProto (field 5) appended; every other
field is copied byte for byte.
"""

from __future__ import annotations

import numpy as np

from qcompile.runtime.container import protobuf_fields
from qcompile.runtime.protobuf_edit import (GRAPH_INITIALIZER, GRAPH_INPUT, TENSOR_DATA_TYPE, TENSOR_DIMS,
                                            TENSOR_NAME, TENSOR_RAW_DATA, length_delimited, records, varint_field,
                                            with_graph)

_VALUE_INFO_NAME = 1
_ONNX_TYPES = {np.dtype(np.float32): 1, np.dtype(np.int32): 6, np.dtype(np.int64): 7}  # TensorProto.DataType


def with_constant_input(model: bytes, name: str, value: np.ndarray) -> bytes:
    """The serialized ``model`` with graph input ``name`` replaced by the constant ``value``.

    A ``ValueError`` if the graph has no such input or the dtype has no mapping here.
    """
    value = np.asarray(value)
    if value.dtype not in _ONNX_TYPES:
        raise ValueError(f"constant input {name!r}: dtype {value.dtype} is not one of {sorted(map(str, _ONNX_TYPES))}")
    found = []

    def edit(data: bytes, span: tuple[int, int]) -> bytearray:
        graph = _graph_without_input(data, span, name, found)
        return graph + length_delimited(GRAPH_INITIALIZER, _tensor(name, value))

    out = with_graph(model, edit)
    if not found:
        raise ValueError(f"the graph has no input named {name!r}")
    return out


def _graph_without_input(model: bytes, span: tuple[int, int], name: str, found: list) -> bytearray:
    graph = bytearray()
    target = name.encode("utf-8")
    for number, inner, begin, end in records(model, *span):
        if number == GRAPH_INPUT and inner is not None and _name_of(model, inner) == target:
            found.append(name)
            continue
        graph += model[begin:end]
    return graph


def _name_of(model: bytes, span: tuple[int, int]) -> bytes | None:
    for number, inner in protobuf_fields(model, *span):
        if number == _VALUE_INFO_NAME and inner is not None:
            return model[slice(*inner)]
    return None


def _tensor(name: str, value: np.ndarray) -> bytes:
    msg = bytearray()
    for d in value.shape:
        msg += varint_field(TENSOR_DIMS, int(d))
    msg += varint_field(TENSOR_DATA_TYPE, _ONNX_TYPES[value.dtype])
    msg += length_delimited(TENSOR_NAME, name.encode("utf-8"))
    msg += length_delimited(TENSOR_RAW_DATA, np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes())
    return bytes(msg)
