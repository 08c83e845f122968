"""Pass: remove node attributes that only restate what ONNX assumes when they are absent.

The exporter spells out every attribute (``auto_pad="NOTSET"``, ``group=1``, ``dilations=[1, 1]``,
``storage_order=0`` …): on a small CNN that was half the bytes of its nodes. A convolution's
``kernel_shape`` restates its weight's shape, another 22 bytes a layer.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

# Attributes the spec gives an implicit default ("1 / 0 along each spatial axis") that the schema
# cannot record, for the convolution and pooling operators that share that wording.
_SPATIAL_DEFAULTS = {"strides": 1, "dilations": 1, "pads": 0}
_SPATIAL_OPS = frozenset({"Conv", "ConvInteger", "ConvTranspose", "QLinearConv", "MaxPool", "AveragePool", "LpPool"})
# Convolutions whose absent kernel_shape the spec infers from the weight, their input 1.
_KERNEL_FROM_WEIGHT_OPS = frozenset({"Conv", "ConvInteger", "ConvTranspose"})


def _kernel_of_weight(node: ir.Node, attr: ir.Attr) -> bool:
    """``kernel_shape`` equal to the spatial dims of a weight whose shape is known."""
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None or weight.shape is None or not weight.shape.is_static():
        return False
    return list(weight.shape)[2:] == list(attr.as_ints())


def _schema(node: ir.Node, opsets: dict[str, int]) -> onnx.defs.OpSchema | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    version = node.version or opsets.get("", opsets.get("ai.onnx"))
    if version is None:
        return None
    try:
        return onnx.defs.get_schema(node.op_type, version, domain="")
    except onnx.defs.SchemaError:
        return None


def _is_default(node: ir.Node, attr: ir.Attr, schema: onnx.defs.OpSchema) -> bool:
    if attr.is_ref():
        return False
    spec = schema.attributes.get(attr.name)
    if spec is None or spec.required:
        return False
    default = spec.default_value
    if default.type != onnx.AttributeProto.UNDEFINED:
        return ir.serde.serialize_attribute(attr) == _renamed(default, attr.name)
    if node.op_type in _SPATIAL_OPS and attr.name in _SPATIAL_DEFAULTS and attr.type == ir.AttributeType.INTS:
        return all(v == _SPATIAL_DEFAULTS[attr.name] for v in attr.as_ints())
    if node.op_type in _KERNEL_FROM_WEIGHT_OPS and attr.name == "kernel_shape" and attr.type == ir.AttributeType.INTS:
        return _kernel_of_weight(node, attr)
    return False


def _renamed(proto: onnx.AttributeProto, name: str) -> onnx.AttributeProto:
    copy = onnx.AttributeProto()
    copy.CopyFrom(proto)
    copy.name = name
    copy.ClearField("doc_string")
    return copy


class DropDefaultAttributes(ir.passes.InPlacePass):
    """Delete attributes equal to their default, in the default ONNX domain.

    Rules:
    1. an attribute whose value equals the schema's ``default_value`` for the node's opset is
       removed (same type and value; ``auto_pad="NOTSET"``, ``group=1``, ``alpha=1.0`` …);
    2. for convolution and pooling ops, ``strides`` and ``dilations`` of all ones and ``pads``
       of all zeros are removed: the spec defines their absence as exactly that;
    3. Conv, ConvInteger and ConvTranspose lose ``kernel_shape`` when it equals the spatial dims
       of their weight and that weight's shape is known (the spec infers it from the weight);
       pooling keeps it (it is required there), and so do other attributes without a default;
    4. nodes of custom domains, nodes without a known schema and attribute references (inside
       functions) are left alone; graph, subgraphs and model-local functions are all visited.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        opsets = dict(model.opset_imports)
        nodes = list(ir.traversal.RecursiveGraphIterator(model.graph))
        for function in model.functions.values():
            nodes.extend(ir.traversal.RecursiveGraphIterator(function))
        modified = False
        for node in nodes:
            schema = _schema(node, opsets)
            if schema is None:
                continue
            for attr in [a for a in node.attributes.values() if _is_default(node, a, schema)]:
                del node.attributes[attr.name]
                modified = True
        return ir.passes.PassResult(model, modified=modified)
