"""Pass: give each planned quantized op an input (activation) quantizer.

Rules: (1) only quantized ops whose site plans ``a_bits``; (2) unsigned when the producer is
provably non-negative (ReLU, pooling of ReLU, ...: see :mod:`qcompile.passes.nonnegative`), else
signed symmetric; (3) an op that already has an input quantizer is left alone. The quantizer comes
from a factory called with the site and its signedness, which is how a method plug-in supplies its
own (e.g. a dithered one) without touching this pass.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import fx

from qcompile.plan import QuantPlan, SitePlan
from qcompile.quantized_ops import QuantizedOp
from qcompile.quantizers import ActivationQuantizer
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of
from qcompile.passes.nonnegative import is_nonnegative

ActivationQuantizerFactory = Callable[[SitePlan, bool], ActivationQuantizer]


def default_activation_quantizer(site: SitePlan, signed: bool) -> ActivationQuantizer:
    return ActivationQuantizer(site.a_bits, signed=signed)


class InsertActivationQuantizers(GraphPass):
    def __init__(self, plan: QuantPlan, factory: ActivationQuantizerFactory = default_activation_quantizer):
        super().__init__()
        self.plan, self.factory = plan, factory

    def run(self, gm: fx.GraphModule):
        done = []
        memo: dict = {}
        for node in gm.graph.nodes:
            m = module_of(gm, node)
            if not isinstance(m, QuantizedOp) or m.input_quantizer is not None:
                continue
            site = self.plan.site(str(node.target))
            if site is None or site.a_bits is None:
                continue
            producer = node.args[0]
            signed = not (isinstance(producer, fx.Node) and is_nonnegative(gm, producer, memo))
            m.input_quantizer = self.factory(site, signed).to(m.weight.device)
            done.append({"site": site.name, "bits": site.a_bits, "signed": signed, "producer": getattr(producer, "name", "?")})
        return bool(done), {"activation_quantizers": done}
