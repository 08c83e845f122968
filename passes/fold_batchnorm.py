"""Pass: fold BatchNorm into the preceding Conv/Linear without changing any integer code.

The arithmetic is :func:`qcompile.quantized_ops.fold_affine`, the same an attached BatchNorm uses in
eval (``passes.attach_batchnorm``), so the folded model's output equals the trained model's bitwise.

For y = BN(op(x)) with g = γ/√(var + ε):
  * quantized op: ``channel_scale ← channel_scale·g`` and ``bias ← bias·g + β − μ·g``; the weight
    codes (and their scales) are untouched, so the exported codes are exactly the trained ones;
  * float op: ``weight ← weight·g`` and the same bias rule (the classic fold).

Rules: (1) the BN must be the only user of the op's output; (2) BN uses its running statistics,
so fold only models meant for inference (the export pipeline runs this after ``StripForExport``);
(3) anything else — a BN after a pool or an add — is left in place and reported.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from qcompile.passes.attach_batchnorm import AttachedBatchNorm
from qcompile.quantized_ops import QUANTIZABLE, QuantizedOp, bn_affine, fold_affine
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import bypass_node, module_of


class FoldBatchNorm(GraphPass):
    def run(self, gm: fx.GraphModule):
        folded, skipped = [], []
        for node in list(gm.graph.nodes):
            bn = module_of(gm, node)
            if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d, AttachedBatchNorm)):
                continue
            producer = node.args[0]
            op = module_of(gm, producer) if isinstance(producer, fx.Node) else None
            if op is None or not (isinstance(op, QuantizedOp) or type(op) in QUANTIZABLE):
                skipped.append({"bn": str(node.target), "reason": "not preceded by a conv/linear"})
                continue
            if len(producer.users) != 1:
                skipped.append({"bn": str(node.target), "reason": "the conv output has other users"})
                continue
            if bn.running_var is None:
                skipped.append({"bn": str(node.target), "reason": "no running statistics"})
                continue
            self._fold(op, bn)
            bypass_node(gm, node, producer)
            folded.append({"bn": str(node.target), "into": str(producer.target)})
        if folded:
            gm.delete_all_unused_submodules()
        return bool(folded), {"folded": folded, "skipped": skipped}

    @staticmethod
    @torch.no_grad()
    def _fold(op: nn.Module, bn: nn.Module) -> None:
        g, h = bn_affine(bn)
        if isinstance(op, QuantizedOp):
            channel_scale, bias = fold_affine(op.channel_scale, op.bias, g, h)
            op.channel_scale.copy_(channel_scale)
            op.attach_batchnorm(None)
        else:
            _, bias = fold_affine(torch.ones_like(g), op.bias, g, h)
            op.weight = nn.Parameter(op.weight.detach() * g.reshape([-1] + [1] * (op.weight.dim() - 1)))
        op.bias = nn.Parameter(bias)
