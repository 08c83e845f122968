"""Pass: shrink the serialized model to little more than its tensors, without changing what it computes.

On a 100k-weight CNN at 4 bits the exporter's names, intermediate ``value_info`` and node names
were ~15 % of the file on top of the packed weights; they carry nothing a runtime needs (ORT and
the checker infer every intermediate type and shape).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator

import onnx_ir as ir

from qcompile.export.size import BITS_KEY

_FIRST = string.ascii_letters  # names are C identifiers (ONNX IR spec): a letter first,
_REST = string.digits + string.ascii_letters  # then letters or digits


def _short_names() -> Iterator[str]:
    """a, b, …, Z, a0, a1, …, ZZ, a00, … — shortest first."""
    for length in itertools.count(1):
        for first in _FIRST:
            for rest in itertools.product(_REST, repeat=length - 1):
                yield first + "".join(rest)


def _is_codes(value: ir.Value) -> bool:
    """A packed weight initializer (``LowerDecodeWeight`` marks them with ``qcompile.bits``)."""
    return value.const_value is not None and BITS_KEY in value.const_value.metadata_props


class CompactModel(ir.passes.InPlacePass):
    """Drop what the file does not need and shorten what it must name; run it last.

    Rules:
    1. identical initializers of the main graph (same dtype, shape and bytes, at most
       ``size_limit`` elements, not graph inputs or outputs) are merged into the first one; codes
       initializers are never merged, even with equal codes of another layer;
    2. every value but a graph's inputs and outputs loses its type, shape, metadata and doc string,
       so no ``value_info`` is written; graph inputs and outputs keep their types and shapes (the
       dynamic batch dimension included) and lose only metadata and doc strings; values of
       model-local functions too;
    3. nodes lose their names, metadata and doc strings, in model-local functions too;
    4. every named value is renamed to the next short C identifier (``a``…``Z``, ``a0``…), in graph
       order, except the main graph's inputs and outputs and the codes (in any graph): they bear
       their layer's name (given by ``LowerDecodeWeight``), which is how readers find a layer's
       codes, and carry their ``qcompile.bits`` / ``qcompile.elements`` tensor metadata unchanged; unnamed (omitted
       optional) values stay unnamed; a new name is never one in use before the pass;
    5. model-local functions keep their names and their values' names; model-level
       ``metadata_props`` are left as they are.
    """

    def __init__(self, size_limit: int = 1024):
        super().__init__()
        self.size_limit = size_limit

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        merged = self._merge_initializers(model.graph)
        stripped = self._strip(model)
        renamed = self._rename(model)
        return ir.passes.PassResult(model, modified=merged or stripped or renamed)

    def _merge_initializers(self, graph: ir.Graph) -> bool:
        """Rule 1."""
        first: dict[tuple, ir.Value] = {}
        merged = False
        for value in tuple(graph.initializers.values()):
            tensor = value.const_value
            if (tensor is None or _is_codes(value) or tensor.size > self.size_limit or value.is_graph_input()
                    or value.is_graph_output() or tensor.dtype.is_string()):
                continue
            key = (tensor.dtype, tuple(tensor.shape), tensor.tobytes())
            if key in first:
                value.replace_all_uses_with(first[key])
                graph.initializers.pop(value.name)
                merged = True
            else:
                first[key] = value
        return merged

    @staticmethod
    def _strip(model: ir.Model) -> bool:
        """Rules 2 and 3."""
        modified = False
        for graph in (*model.graphs(), *model.functions.values()):
            boundary = {*graph.inputs, *graph.outputs}
            values = [*graph.inputs, *(graph.initializers.values() if isinstance(graph, ir.Graph) else ())]
            for node in graph:
                values.extend(node.outputs)
                if node.name or node.doc_string or node.metadata_props:
                    node.name, node.doc_string = None, None
                    node.metadata_props.clear()
                    modified = True
            for value in values:
                typed = value not in boundary and (value.type is not None or value.shape is not None)
                if typed or value.metadata_props or value.doc_string:
                    if value not in boundary:
                        value.type, value.shape = None, None
                    value.metadata_props.clear()
                    value.doc_string = None
                    modified = True
        return modified

    @staticmethod
    def _rename(model: ir.Model) -> bool:
        """Rule 4; one counter for the whole model, so names are unique across subgraphs too."""
        main = model.graph
        values = [v for graph in model.graphs() for v in (*graph.inputs, *graph.initializers.values(),
                                                           *(out for node in graph for out in node.outputs))]
        kept = {*main.inputs, *main.outputs, *(v for v in values if _is_codes(v))}
        taken = {v.name for v in values} | {v.name for v in kept}  # no new name may shadow an old one
        names = (name for name in _short_names() if name not in taken)
        modified = False
        seen: set[ir.Value] = set()
        for value in values:
            if value in kept or value in seen or not value.name:
                continue
            seen.add(value)
            value.name = next(names)
            modified = True
        return modified
