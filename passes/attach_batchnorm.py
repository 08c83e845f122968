"""Pass: attach each BatchNorm that follows a quantized op to that op.

Why: the exported model has BN folded into the op's per-channel scale and bias. Computed the
unfolded way (op, then BN) the eval output differs by float rounding, and a rounding difference can
flip the next activation code. Attached, the op applies BN in eval with the fold's own arithmetic,
so the trained model in eval and the exported one agree bit for bit.

Rules: (1) only a BatchNorm1d/2d whose input is a quantized op with no other user; (2) the BN module
is replaced by an :class:`AttachedBatchNorm` with the same parameters and buffers (state-dict keys
unchanged): in training it is an ordinary BN (batch statistics); in eval it passes its input through,
because the op has already applied it; (3) the graph is unchanged.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from qcompile.quantized_ops import QuantizedOp
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of, replace_submodule


class AttachedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm whose eval-mode transform is applied by the quantized op before it."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.training else x

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> AttachedBatchNorm:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        return new.to(bn.running_mean.device if bn.running_mean is not None else "cpu").train(bn.training)


class AttachBatchNorm(GraphPass):
    def run(self, gm: fx.GraphModule):
        attached = []
        for node in gm.graph.nodes:
            bn = module_of(gm, node)
            if type(bn) not in (nn.BatchNorm1d, nn.BatchNorm2d) or not bn.track_running_stats:
                continue
            producer = node.args[0]
            op = module_of(gm, producer) if isinstance(producer, fx.Node) else None
            if not isinstance(op, QuantizedOp) or len(producer.users) != 1:
                continue
            new = AttachedBatchNorm.from_batchnorm(bn)
            replace_submodule(gm, str(node.target), new)
            op.attach_batchnorm(new)
            attached.append({"bn": str(node.target), "op": str(producer.target)})
        return bool(attached), {"attached": attached}
