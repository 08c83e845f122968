"""Pass: swap every planned Conv/Linear for its quantized op with a weight quantizer.

The graph is unchanged (each node keeps its target); the module at that name becomes a
:class:`~qcompile.quantized_ops.QuantizedOp` sharing the float module's parameters, so
state-dict keys stay the same. The quantizer comes from a factory, which is how method
plug-ins (:mod:`qcompile.methods`) choose the quantizer without touching this pass.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import fx

from qcompile.plan import QuantPlan, SitePlan
from qcompile.quantized_ops import QUANTIZABLE, quantize_module
from qcompile.quantizers import WeightQuantizer, make_weight_quantizer
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of, replace_submodule

QuantizerFactory = Callable[[SitePlan], WeightQuantizer]


def default_weight_quantizer(site: SitePlan) -> WeightQuantizer:
    return make_weight_quantizer(site.quantizer, site.w_bits, site.per_channel, site.group_size)


class InsertWeightQuantizers(GraphPass):
    """Rules: (1) only sites in the plan with ``w_bits`` set; (2) only float Conv1d/Conv2d/Linear
    (an already-quantized op is left alone, so the pass is idempotent)."""

    def __init__(self, plan: QuantPlan, factory: QuantizerFactory = default_weight_quantizer):
        super().__init__()
        self.plan, self.factory = plan, factory

    def run(self, gm: fx.GraphModule):
        done, kept = [], []
        for node in gm.graph.nodes:
            m = module_of(gm, node)
            if m is None or type(m) not in QUANTIZABLE:
                continue
            site = self.plan.site(str(node.target))
            if site is None or not site.quantized:
                kept.append({"site": str(node.target), "reason": site.reason if site else "not in plan"})
                continue
            q = self.factory(site)
            device = m.weight.device
            replace_submodule(gm, str(node.target), quantize_module(m, q).to(device))
            done.append({"site": site.name, "quantizer": q.describe()})
        return bool(done), {"quantized": done, "kept_float": kept}
