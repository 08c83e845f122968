"""Pass: add the bit selector on the input and make every multi-width op run at its per-image width.

GraphModule in → GraphModule + report out. The selector (:class:`~.selector.BitSelector`) is called
once on the first input; each quantized op whose weight quantizer is nested over the candidate widths
is wrapped in a :class:`~.selector.DynamicOp` at the same name (its parameters move under ``.op``)
and called with the selector's choices as a second argument. The graph's outputs are unchanged.

:class:`FixWidths` undoes it for a static export: each layer at the width the selector chose most
often in the latest evaluation (dynadfq.md §8's fallback for runtimes without per-image dispatch).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import fx

from qcompile.errors import ConfigError
from qcompile.methods.dynadfq.nested import NestedWeightQuantizer
from qcompile.methods.dynadfq.selector import BitSelector, DynamicOp
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of, replace_submodule
from qcompile.quantized_ops import QuantizedOp

SELECTOR = "bit_selector"


class InsertBitSelector(GraphPass):
    def __init__(self, candidates: Sequence[int], hidden: int = 32, tau: float = 1.0):
        super().__init__()
        self.candidates, self.hidden, self.tau = tuple(candidates), hidden, tau

    def _dynamic(self, m) -> bool:
        return isinstance(m, QuantizedOp) and isinstance(m.weight_quantizer, NestedWeightQuantizer) \
            and m.weight_quantizer.candidates == self.candidates

    def run(self, gm: fx.GraphModule):
        if hasattr(gm, SELECTOR):
            return False, {"dynamic_layers": [], "note": "already has a bit selector"}
        nodes = [n for n in gm.graph.nodes if self._dynamic(module_of(gm, n))]
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if not nodes or not placeholders:
            raise ConfigError("no layer can take per-image widths (none is quantized with the nested multi-width "
                              "weights)", hint="quantize at least one Conv/Linear (check --first-layer/--last-layer "
                                               "and --layer-bits), or give one --bits width")
        selector = BitSelector(len(nodes), self.candidates, self.hidden, self.tau)
        gm.add_submodule(SELECTOR, selector.to(next(gm.parameters()).device))
        with gm.graph.inserting_after(placeholders[-1]):
            choices = gm.graph.call_module(SELECTOR, (placeholders[0],))
        layers = []
        for index, node in enumerate(nodes):
            name = str(node.target)
            replace_submodule(gm, name, DynamicOp(gm.get_submodule(name), index, self.candidates))
            node.args = (*node.args, choices)
            layers.append(name)
        return True, {"dynamic_layers": layers, "candidates": list(self.candidates),
                      "selector_macs": selector.macs}


def remove_selector(gm: fx.GraphModule) -> tuple[BitSelector, dict[str, DynamicOp]]:
    """Take the selector out of ``gm`` and unwrap every DynamicOp (its op back at its name, called
    without the choices); returns the selector and the DynamicOps by name."""
    selector, wrappers = gm.get_submodule(SELECTOR), {}
    for node in list(gm.graph.nodes):
        m = module_of(gm, node)
        if isinstance(m, DynamicOp):
            replace_submodule(gm, str(node.target), m.op)
            node.args = node.args[:-1]
            wrappers[str(node.target)] = m
    gm.graph.erase_node(next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == SELECTOR))
    delattr(gm, SELECTOR)
    return selector, wrappers


class FixWidths(GraphPass):
    """Remove the selector; each DynamicOp becomes its op at the selector's most frequent width for it."""

    def run(self, gm: fx.GraphModule):
        if not hasattr(gm, SELECTOR):
            return False, {"widths": {}}
        selector, wrappers = remove_selector(gm)
        widths = selector.most_frequent()
        for m in wrappers.values():
            m.use_width(widths[m.index])
        return True, {"widths": {name: widths[m.index] for name, m in wrappers.items()},
                      "from": "most frequent in the latest evaluation" if int(selector.chosen.sum())
                      else "no evaluation counted: the widest"}
