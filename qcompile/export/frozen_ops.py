"""Export-time stand-ins for the quantized ops: buffers only, weights as packed integer codes.

A frozen op holds what inference needs and nothing a training step could change:

* ``packed_weight`` (uint8): the weight codes packed LSB-first (see :mod:`.packing`; 3-bit codes
  in a 4-bit container, 5/6/7-bit codes in an 8-bit one), plus ``zero_point`` and the Python
  decode parameters (``bits``, ``signed``, ``multiplier``, ``offset``): ``ints = (codes − zp)·m + o``;
* ``output_scale``: s_x · s_w · channel_scale per output channel, computed once by
  ``QuantizedOp.output_scale`` itself so it is bit-identical to what training used;
* ``bias`` and, with an input quantizer, ``input_scale`` and the exact ``qmin``/``qmax``.

``forward`` is ``QuantizedOp.forward`` with the weight quantizer replaced by the decode, so eager
outputs are bitwise equal to the unfrozen module. Under ``torch.onnx.export`` the decode becomes
one opaque ``qcompile::DecodeWeight(packed, zero_point[, scale])`` node (the scale only in weight-only
layers, whose decoded weight is ``ints · output_scale``): the exporter's constant folding cannot
unpack it into a float weight, and an ONNX pass later lowers it to INT4/INT2/... initializers +
DequantizeLinear.
Activation quantization is emitted as plain Div → Round → Clip(qmin, qmax), never QuantizeLinear
or fake_quantize (which would widen a 4-bit range to 8 bits).

Codes with a seeded dither (:class:`~qcompile.quantizers.codes.Dither`) decode as ``DecodeWeight(packed,
zero_point) + qcompile::Dither`` (then ``· scale`` in a weight-only layer): the Dither node, named by the
dither's node id, becomes a tensor the runtime regenerates at load (``LowerDither``), never stored.
"""

from __future__ import annotations

import torch
from torch import nn

from qcompile.export.packing import container_bits, pack_codes, unpack_codes, weight_format
from qcompile.quantized_ops import QuantConv, QuantLinear
from qcompile.quantizers.base import along_axis
from qcompile.quantizers.codes import QuantCodes

DECODE_OP = "qcompile::DecodeWeight"
DITHER_OP = "qcompile::Dither"
DECODE_OPSET_VERSION = 1
PACKED_WEIGHT = "packed_weight"  # the codes buffer: the exporter names its initializer '<layer>.packed_weight'


class FrozenQuantizedOp(nn.Module):
    """Shared buffers, decode and integer-domain math of the frozen Conv/Linear."""

    float_type: type[nn.Module]

    def __init__(
        self,
        codes: QuantCodes,
        output_scale: torch.Tensor,
        bias: torch.Tensor | None,
        input_scale: torch.Tensor | None = None,
        input_range: tuple[int, int] | None = None,
    ):
        super().__init__()
        codes.validate()
        self.bits, self.signed = codes.bits, codes.signed
        self.multiplier, self.offset = codes.multiplier, codes.offset
        self.weight_shape = tuple(codes.codes.shape)
        self.dither = codes.dither  # plain attribute: regenerated from its seed, never exported as a tensor
        self.weight_scale = codes.scale.detach().clone()  # plain attribute: not used by forward, not exported
        self.register_buffer(PACKED_WEIGHT, pack_codes(codes.codes, codes.bits))
        self.register_buffer("zero_point", codes.zero_point.detach().to(torch.int64).clone())
        self.register_buffer("output_scale", output_scale.detach().to(torch.float32).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).clone())
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().clone())
        self.qmin, self.qmax = input_range if input_range is not None else (None, None)

    @property
    def container_bits(self) -> int:
        return container_bits(self.bits)

    @property
    def weight_format(self) -> str:
        return weight_format(self.bits, self.signed)

    def codes(self) -> QuantCodes:
        """The stored codes with their decode parameters (unpacked; for checks and eager decode)."""
        return QuantCodes(
            codes=unpack_codes(self.packed_weight, self.bits, self.signed, self.weight_shape),
            scale=self.weight_scale,
            zero_point=self.zero_point,
            bits=self.bits,
            signed=self.signed,
            multiplier=self.multiplier,
            offset=self.offset,
            axis=0 if self.zero_point.dim() else None,
            dither=self.dither,
        )

    def decode_weight(self, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Integer-valued float32 weights, times ``scale`` along axis 0 when given; an opaque ONNX node
        while exporting. A weight-only layer passes its output scale, so the exported decode knows the
        scale and the ONNX lowering can fold it into ``DequantizeLinear`` where that is exact. With a
        dither the scale comes after the offsets are added (PyTorch's order), so it is never folded."""
        if not torch.onnx.is_in_onnx_export():
            w_ints = self.codes().integers()
        elif self.dither is None:
            return self._decode_node(scale)
        else:
            w_ints = self._decode_node(None) + torch.onnx.ops.symbolic(
                DITHER_OP, [], attrs={"name": self.dither.node, "shape": list(self.weight_shape)},
                dtype=torch.float32, shape=self.weight_shape, version=DECODE_OPSET_VERSION)
        return w_ints if scale is None else w_ints * along_axis(scale, w_ints, 0)

    def _decode_node(self, scale: torch.Tensor | None) -> torch.Tensor:
        return torch.onnx.ops.symbolic(
            DECODE_OP,
            [self.packed_weight, self.zero_point] + ([] if scale is None else [scale]),
            attrs={
                "bits": self.bits,
                "signed": int(self.signed),
                "shape": list(self.weight_shape),
                "multiplier": self.multiplier,
                "offset": self.offset,
                "axis": 0,
            },
            dtype=torch.float32,
            shape=self.weight_shape,
            version=DECODE_OPSET_VERSION,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is None:
            y = self._op(x, self.decode_weight(self.output_scale))
        else:
            x_ints = torch.clamp(torch.round(x / self.input_scale), self.qmin, self.qmax)
            acc = self._op(x_ints, self.decode_weight())
            y = acc * self._out_view(self.output_scale, acc)
        if self.bias is not None:
            y = y + self._out_view(self.bias, y)
        return y

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _out_view(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        act = "" if self.input_scale is None else f", input=[{self.qmin}, {self.qmax}]"
        return (f"{self.float_type.__name__}, weight={self.weight_shape}, {self.bits}b as {self.weight_format}"
                f"{act}, bias={self.bias is not None}")


class FrozenConv(FrozenQuantizedOp):
    """Frozen Conv1d/Conv2d. ``_op``/``_out_view`` are QuantConv's own, so the math cannot drift."""

    _op = QuantConv._op
    _out_view = QuantConv._out_view

    def __init__(self, conv: QuantConv, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.float_type = conv.float_type
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups


class FrozenLinear(FrozenQuantizedOp):
    """Frozen Linear, with QuantLinear's own ``_op``/``_out_view``."""

    _op = QuantLinear._op
    _out_view = QuantLinear._out_view

    def __init__(self, linear: QuantLinear, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.float_type = nn.Linear


FROZEN = {QuantConv: FrozenConv, QuantLinear: FrozenLinear}
