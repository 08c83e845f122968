"""Pass: remove training-only machinery before export.

Rules: (1) eval mode everywhere; (2) activation ranges frozen (an uncalibrated one is an error:
exporting it would invent a range); (3) a weight quantizer that wraps another for training only
(e.g. one that substitutes a meta-learned weight) is replaced by what it wraps — it exposes ``export_quantizer()``;
(4) Dropout nodes (module or functional) are bypassed.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from qcompile.errors import ExportError
from qcompile.quantized_ops import QuantizedOp
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import bypass_node, module_of


class StripForExport(GraphPass):
    def run(self, gm: fx.GraphModule):
        gm.eval()
        unwrapped, dropouts = [], []
        for name, m in gm.named_modules():
            if not isinstance(m, QuantizedOp):
                continue
            if hasattr(m.weight_quantizer, "export_quantizer"):
                m.weight_quantizer = m.weight_quantizer.export_quantizer()
                unwrapped.append(name)
            if m.input_quantizer is not None:
                if not bool(m.input_quantizer.calibrated):
                    raise ExportError(f"the input quantizer of '{name}' was never calibrated",
                                      hint="finetune or calibrate on data before export (compile with --data)")
                m.input_quantizer.freeze()
        for node in list(gm.graph.nodes):
            m = module_of(gm, node)
            if isinstance(m, (nn.Dropout, nn.Dropout2d)) or (node.op == "call_function" and node.target is F.dropout):
                bypass_node(gm, node, node.args[0])
                dropouts.append(node.name)
        if dropouts:
            gm.delete_all_unused_submodules()
        return bool(unwrapped or dropouts), {"unwrapped_quantizers": unwrapped, "removed_dropout": dropouts}
