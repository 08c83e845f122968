"""Export-time stand-in for a block-quantized Linear: packed codes in MatMulNBits' layout, scales, bias.

``packed_weight`` is uint8 [N, n_blocks, group_size·bits/8]: each row's codes padded to a whole number of
blocks with the zero point (which decodes to 0), then packed LSB-first along K, the order of
:mod:`.packing` and of MatMulNBits' ``B``. ``scales`` is [N, n_blocks], ``QuantBlockLinear.output_scale``
evaluated once, so the decode ``(q − zero_point) · scale`` is bit-identical to the one training used.

Under ``torch.onnx.export`` the layer is one opaque ``qcompile::BlockLinear(x, packed, scales[, bias])``
node (constant folding cannot unpack it); :class:`~qcompile.export.onnx_passes.lower_block_linear.LowerBlockLinear`
turns it into ``com.microsoft::MatMulNBits``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qcompile.export.packing import pack_codes, unpack_codes
from qcompile.quantized_block import QuantBlockLinear
from qcompile.quantizers.block import BlockCodes, expand_blocks

BLOCK_LINEAR_OP = "qcompile::BlockLinear"
BLOCK_LINEAR_VERSION = 1
CONTRIB_OPS_FIELD = "contrib_ops"  # manifest field: the non-standard ops a runtime must provide
MATMUL_NBITS = "com.microsoft.MatMulNBits"


def contrib_ops(layers) -> list[str]:
    """The manifest's ``contrib_ops``: MatMulNBits when a layer record names block storage, else nothing."""
    return [MATMUL_NBITS] if any("-block" in layer["weight_format"] for layer in layers) else []


def pack_blocks(codes: torch.Tensor, bits: int, group_size: int, zero_point: int) -> torch.Tensor:
    """Codes [N, K] → uint8 [N, n_blocks, group_size·bits/8], the tail of each row padded with ``zero_point``."""
    n, k = codes.shape
    blocks = math.ceil(k / group_size)
    padded = F.pad(codes, (0, blocks * group_size - k), value=zero_point)
    return pack_codes(padded, bits).reshape(n, blocks, group_size * bits // 8)


def unpack_blocks(packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_blocks`: int64 codes [N, K] (the padding dropped)."""
    n, blocks, blob = packed.shape
    return unpack_codes(packed.reshape(-1), bits, False, (n, blocks * blob * 8 // bits))[:, :k]


class FrozenBlockLinear(nn.Module):
    """Frozen :class:`~qcompile.quantized_block.QuantBlockLinear` (float input, no activation quantizer)."""

    float_type = nn.Linear
    signed = False
    dither = None
    qmin = qmax = None

    def __init__(self, op: QuantBlockLinear, codes: BlockCodes, output_scale: torch.Tensor,
                 bias: torch.Tensor | None, input_scale: torch.Tensor | None = None, input_range=None):
        super().__init__()
        if input_scale is not None:
            raise ValueError("a block-quantized Linear has no input quantizer")
        codes.validate()
        self.bits, self.group_size = codes.bits, codes.group_size
        self.out_features, self.in_features = codes.codes.shape
        self.zero_point = int(codes.zero_point)
        self.register_buffer("packed_weight", pack_blocks(codes.codes, self.bits, self.group_size, self.zero_point))
        self.register_buffer("scales", output_scale.detach().to(torch.float32).clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).clone())
        self.register_buffer("input_scale", None)

    @property
    def weight_format(self) -> str:
        """The manifest's name for the storage: e.g. ``uint4-block32`` (MatMulNBits' B)."""
        return f"uint{self.bits}-block{self.group_size}"

    def codes(self) -> BlockCodes:
        return BlockCodes(codes=unpack_blocks(self.packed_weight, self.bits, self.in_features), scale=self.scales,
                          zero_point=torch.tensor(self.zero_point), bits=self.bits, signed=False,
                          group_size=self.group_size)

    def weight(self) -> torch.Tensor:
        """The decoded float weight [N, K]: ``(q − zero_point) · scale``, MatMulNBits' decode."""
        return self.codes().integers() * expand_blocks(self.scales, self.group_size, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return F.linear(x, self.weight(), self.bias)
        inputs = [x, self.packed_weight, self.scales] + ([] if self.bias is None else [self.bias])
        return torch.onnx.ops.symbolic(
            BLOCK_LINEAR_OP, inputs,
            attrs={"K": self.in_features, "N": self.out_features, "bits": self.bits, "block_size": self.group_size},
            dtype=torch.float32, shape=(*x.shape[:-1], self.out_features), version=BLOCK_LINEAR_VERSION)

    def extra_repr(self) -> str:
        return (f"Linear, weight=({self.out_features}, {self.in_features}), {self.bits}b in blocks of "
                f"{self.group_size} as {self.weight_format}, bias={self.bias is not None}")
