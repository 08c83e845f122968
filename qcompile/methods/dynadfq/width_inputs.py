"""A multi-width model as one graph that takes the widths as an input: nested codes stored once, packed.

Each dynamic layer keeps the frozen op of its widest width B (the packed B-bit codes, decoded to the
odd integers m_B = 2·k_B + 1) and small per-candidate tables. At candidate k (width b, shift s = B − b):

    m_b = 2·floor(m_B / 2^(s+1)) + 1          (= 2·(k_B >> s) + 1: floor((2k + 1)/2^(s+1)) = floor(k/2^s))
    x_b = clamp(round(x / s_x[k]), qmin[k], qmax[k])
    y   = op(x_b, m_b) · out_scale[k] + bias

with out_scale[k] = s_x·s_w·channel_scale as the op itself evaluates it at width b, so every value is
bit-identical to what the op computes in PyTorch at that width (checked when the tables are built). The
nested grid's weight scale at width b is the widest one times a power of two, so out_scale[k] is stored
as one per-channel vector and two scalars per width, (s_x[k] · base) · 2^(s−1) with base = step ·
channel_scale (powers of two scale floats exactly), not as K per-channel rows.
The graph's second input ``widths`` (int64, one candidate index per dynamic layer) selects k; the
runtime runs the graph once per configuration present in a batch. Powers of two divide exactly and the
odd integers are small, so the arithmetic in float32 is exact.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from qcompile.errors import ExportError
from qcompile.export.frozen_ops import FrozenQuantizedOp
from qcompile.passes.freeze_for_export import freeze_op
from qcompile.quantized_ops import QuantizedOp


class WidthInputOp(nn.Module):
    def __init__(self, frozen: FrozenQuantizedOp, index: int, shifts: list[int], base: torch.Tensor,
                 in_scales: torch.Tensor, qmins: list[int], qmaxs: list[int]):
        super().__init__()
        self.frozen, self.index = frozen, int(index)
        self.register_buffer("divisors", torch.tensor([float(2 ** (s + 1)) for s in shifts]))
        self.register_buffer("base", base.detach().to(torch.float32).clone())
        self.register_buffer("powers", torch.tensor([2.0 ** (s - 1) for s in shifts]))
        self.register_buffer("in_scales", in_scales.detach().to(torch.float32).clone())
        self.register_buffer("qmins", torch.tensor(qmins, dtype=torch.float32))
        self.register_buffer("qmaxs", torch.tensor(qmaxs, dtype=torch.float32))

    def forward(self, x: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        k = widths[self.index]
        f = self.frozen
        m = 2.0 * torch.floor(f.decode_weight() / self.divisors[k]) + 1.0
        x_ints = torch.clamp(torch.round(x / self.in_scales[k]), self.qmins[k], self.qmaxs[k])
        acc = f._op(x_ints, m)
        y = acc * f._out_view(out_scale(self.in_scales[k], self.base, self.powers[k]), acc)
        if f.bias is not None:
            y = y + f._out_view(f.bias, y)
        return y


def out_scale(in_scale: torch.Tensor, base: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    return in_scale * base * power


@torch.no_grad()
def width_input_op(name: str, op: QuantizedOp, index: int, candidates: tuple[int, ...]) -> WidthInputOp:
    """The graph form of the BN-folded multi-width ``op``; an ExportError if any width would decode
    to other integers than the op computes with."""
    wq, iq = op.weight_quantizer, op.input_quantizer
    if iq is None or not hasattr(iq, "set_bits"):
        raise ExportError(f"'{name}' runs its input in float: the dynamic artifact needs quantized inputs",
                          hint="compile without --a-bits none for several --bits")
    if not bool(iq.calibrated):
        raise ExportError(f"the input quantizer of '{name}' was never calibrated",
                          hint="calibrate or finetune on data before export")
    out_scales, in_scales, qmins, qmaxs, ints = [], [], [], [], []
    for b in candidates:
        wq.set_bits(b)
        iq.set_bits(b)
        w_ints, w_scale = wq.decompose(op.weight)
        x_scale = iq.scale()
        out_scales.append(op.output_scale(w_scale, x_scale))
        in_scales.append(x_scale.reshape(()))
        qmins.append(iq.qmin)
        qmaxs.append(iq.qmax)
        ints.append(w_ints)
    wq.set_bits(candidates[-1])
    iq.set_bits(candidates[-1])
    frozen = freeze_op(name, op)
    m_max = frozen.decode_weight()
    shifts = [candidates[-1] - b for b in candidates]
    for b, s, w_ints in zip(candidates, shifts, ints):
        if not torch.equal(2 * torch.floor(m_max / 2 ** (s + 1)) + 1, w_ints.to(torch.float32)):
            raise ExportError(f"'{name}': the {b}-bit integers are not nested in the stored {candidates[-1]}-bit codes",
                              hint="this is a qcompile bug; please report it")
    base = op.output_scale(wq.decompose(op.weight)[1] * 2.0, None)  # step · channel_scale (shift 0: step / 2)
    for b, s, x_scale, expected in zip(candidates, shifts, in_scales, out_scales):
        if not torch.equal(out_scale(x_scale, base, torch.tensor(2.0 ** (s - 1))), expected):
            raise ExportError(f"'{name}': the {b}-bit output scale is not the widest one times a power of two",
                              hint="this is a qcompile bug; please report it")
    return WidthInputOp(frozen, index, shifts, base, torch.stack(in_scales), qmins, qmaxs)


def add_widths_input(gm: fx.GraphModule, dynamic: dict[str, int], candidates: tuple[int, ...]) -> list[dict]:
    """Replace the named (unwrapped, BN-folded) ops by :class:`WidthInputOp`s fed by a new ``widths`` input."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    with gm.graph.inserting_after(placeholders[-1]):
        widths = gm.graph.placeholder("widths")
    layers = []
    for node in list(gm.graph.nodes):
        name = str(node.target)
        if node.op == "call_module" and name in dynamic:
            op = gm.get_submodule(name)
            replacement = width_input_op(name, op, dynamic[name], candidates)
            parent, _, attr = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, attr, replacement)
            node.args = (*node.args, widths)
            f = replacement.frozen
            layers.append({"name": name, "op": f.float_type.__name__, "w_bits": f.bits, "a_bits": f.bits,
                           "weight_format": f.weight_format})
    gm.graph.lint()
    gm.recompile()
    return layers
