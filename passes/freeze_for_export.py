"""Pass: replace every quantized op by its frozen export module (packed codes + buffers only).

Assumes ``StripForExport`` and ``FoldBatchNorm`` ran (eval mode, frozen activation ranges, BN
already in ``channel_scale``/``bias``). Rules:

1. every :class:`~qcompile.quantized_ops.QuantizedOp` called by the graph becomes a
   :class:`~qcompile.export.frozen_ops.FrozenConv`/``FrozenLinear`` at the same qualified name;
2. the codes are ``weight_quantizer.codes(weight)``, and must decode to exactly the integers
   ``decompose`` gives training — otherwise :class:`ExportError` (never export something else);
3. the output scale is ``QuantizedOp.output_scale`` evaluated once on the same tensors, so the
   frozen module multiplies by bit-identical values;
4. the input quantizer keeps only its scale and exact ``[qmin, qmax]``; an uncalibrated one is
   an error (exporting it would invent a range);
5. float modules and everything else in the graph are left untouched.
"""

from __future__ import annotations

import torch
from torch import fx

from qcompile.errors import ExportError
from qcompile.export.frozen_block import FrozenBlockLinear
from qcompile.export.frozen_ops import FROZEN, FrozenQuantizedOp
from qcompile.quantized_block import QuantBlockLinear
from qcompile.quantized_ops import QuantizedOp
from qcompile.quantizers.codes import QuantCodes
from qcompile.passes.base import GraphPass
from qcompile.passes.graph_utils import module_of, replace_submodule


@torch.no_grad()
def checked_codes(name: str, op: QuantizedOp) -> tuple[QuantCodes, torch.Tensor]:
    """``op``'s weight codes and weight scale, once the codes are checked to decode to training's integers."""
    quantizer = op.weight_quantizer
    w_ints, w_scale = quantizer.decompose(op.weight)
    codes = quantizer.codes(op.weight)
    if not torch.equal(codes.integers(), w_ints.to(torch.float32)):
        raise ExportError(
            f"the codes of '{name}' ({quantizer.describe()}) do not decode to the integers training used",
            hint="the weight quantizer's codes() and decompose() disagree; fix the quantizer before exporting",
        )
    return codes, w_scale


@torch.no_grad()
def freeze_op(name: str, op: QuantizedOp) -> FrozenQuantizedOp:
    """The frozen equivalent of ``op`` (rules 2-4)."""
    codes, w_scale = checked_codes(name, op)
    x_scale, x_range = None, None
    iq = op.input_quantizer
    if iq is not None:
        if not bool(iq.calibrated):
            raise ExportError(f"the input quantizer of '{name}' was never calibrated",
                              hint="calibrate or finetune on data before export (compile with --data)")
        x_scale, x_range = iq.scale(), (iq.qmin, iq.qmax)
    output_scale = op.output_scale(w_scale, x_scale)
    frozen_type = FrozenBlockLinear if isinstance(op, QuantBlockLinear) else FROZEN[type(op)]
    return frozen_type(op, codes, output_scale, op.bias, x_scale, x_range).to(op.weight.device)


def layer_summary(name: str, frozen: FrozenQuantizedOp) -> dict:
    """One entry of the ``qcompile.layers`` metadata: {name, op, w_bits, a_bits, weight_format}, plus
    ``dither`` (the seeded dither's record, for the manifest) when the codes have one."""
    a_bits = None if frozen.input_scale is None else (frozen.qmax - frozen.qmin + 1).bit_length() - 1
    summary = {"name": name, "op": frozen.float_type.__name__, "w_bits": frozen.bits, "a_bits": a_bits,
               "weight_format": frozen.weight_format}
    if frozen.dither is not None:
        summary["dither"] = frozen.dither.record()
    return summary


class FreezeForExport(GraphPass):
    def run(self, gm: fx.GraphModule):
        layers = []
        for node in gm.graph.nodes:
            op = module_of(gm, node)
            if not isinstance(op, QuantizedOp):
                continue
            if op.training:
                raise ExportError(f"'{node.target}' is in training mode",
                                  hint="run the export passes (StripForExport) before FreezeForExport")
            frozen = freeze_op(str(node.target), op)
            replace_submodule(gm, str(node.target), frozen)
            layers.append(layer_summary(str(node.target), frozen))
        return bool(layers), {"layers": layers}
