"""Pass: give a Conv or Gemm its bias as an input instead of a separate Add.

PyTorch exports ``conv(x, w) + bias`` of a weight-only quantized layer as Conv → Add(constant);
onnxruntime fuses the two at load anyway (ConvAddFusion), so the file can say it directly and save
a node per layer. Activation-quantized layers never match: their bias follows the output-scale Mul.
"""

from __future__ import annotations

import onnx_ir as ir


def _channels(node: ir.Node) -> int | None:
    """Output channels of a Conv (W is [M, C/g, k...]) or Gemm (B is [K, N], or [N, K] with transB)."""
    shape = node.inputs[1].shape
    if shape is None or not shape.is_static():
        return None
    if node.op_type == "Conv":
        return shape[0]
    trans_b = node.attributes.get("transB")
    return shape[0] if trans_b is not None and trans_b.as_int() else shape[1]


def _bias_vector(node: ir.Node, other: ir.Value) -> ir.Value | None:
    """``other`` as a 1-D bias for ``node``, when it broadcasts against the output only along channels."""
    tensor = ir.convenience.get_const_tensor(other)
    channels = _channels(node)
    if tensor is None or channels is None or tensor.dtype != ir.DataType.FLOAT:
        return None
    dims = list(tensor.shape)
    rank = len(node.inputs[1].shape) if node.op_type == "Conv" else 2
    if len(dims) > rank:
        return None
    dims = [1] * (rank - len(dims)) + dims
    if dims != [1, channels] + [1] * (rank - 2):
        return None
    vector = ir.Tensor(tensor.numpy().reshape(channels))
    return ir.Value(shape=vector.shape, type=ir.TensorType(vector.dtype), const_value=vector)


class FoldBiasAdd(ir.passes.InPlacePass):
    """Rewrite ``Add(Conv(x, W), b)`` as ``Conv(x, W, b)``, and likewise for Gemm's C.

    Rules:
    1. the Conv/Gemm has no bias yet, its output feeds only this Add and is not a graph output;
    2. ``b`` is a float32 constant that broadcasts along the output channels only ([1, M, 1, 1],
       [M, 1, 1], [1, N], [N], ...); its values are stored again as a 1-D initializer of the main
       graph, once per constant (the old one goes when nothing else reads it); Gemm's ``beta``
       must be 1 (absent);
    3. the Conv/Gemm output takes the Add output's name (a graph output keeps its name);
    4. main graph only: the exporter puts weight-only layers there; nodes in subgraphs are left alone.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        vectors: dict[tuple[ir.Value, int], ir.Value] = {}
        for add in list(graph):
            if add.op_type != "Add" or add.domain not in ("", "ai.onnx"):
                continue
            for i, source in enumerate(add.inputs):
                node = source.producer() if source is not None else None
                if (node is None or node.op_type not in ("Conv", "Gemm") or node.domain not in ("", "ai.onnx")
                        or len(node.inputs) != 2 or len(source.uses()) != 1 or source.is_graph_output()
                        or "beta" in node.attributes):
                    continue
                other = add.inputs[1 - i]
                key = (other, _channels(node))
                if key not in vectors:
                    bias = _bias_vector(node, other)
                    if bias is None:
                        continue
                    bias.name = f"{other.name}.bias{len(vectors)}"
                    graph.register_initializer(bias)
                    vectors[key] = bias
                node.resize_inputs(3)
                node.replace_input_with(2, vectors[key])
                out, name = add.outputs[0], add.outputs[0].name
                out.name = None
                source.name, source.type, source.shape = name, out.type, out.shape
                ir.convenience.replace_all_uses_with(out, source, replace_graph_outputs=True)
                graph.remove(add, safe=True)
                break
        return ir.passes.PassResult(model, modified=bool(vectors))
