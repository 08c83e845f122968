"""Linear with block-quantized weights: the float-input matmul onnxruntime's ``MatMulNBits`` computes.

    y = x · (ints ⊙ expand(s_block · channel_scale))ᵀ + bias

A per-(row, block) scale does not factor out of the matmul as a per-channel one does, so the input stays
float (no input quantizer: :func:`~qcompile.quantizers.block.check_group_spec` refuses one) and the weight
is decoded first, exactly as MatMulNBits decodes ``(q − zero_point) · scale``: one float32 product per
weight, the same in PyTorch and onnxruntime. Only the matmul's summation order differs between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qcompile.errors import ConfigError
from qcompile.quantized_ops import QuantLinear
from qcompile.quantizers.block import expand_blocks


def _input_quantizer_error() -> ConfigError:
    return ConfigError("a block-quantized Linear takes float inputs; it cannot have an input quantizer",
                       hint="compile with --a-bits none (API: a_bits=None) when using --group-size")


class QuantBlockLinear(QuantLinear):
    """A :class:`QuantLinear` whose weight quantizer is a :class:`~qcompile.quantizers.BlockQuantizer`."""

    def output_scale(self, w_scale: torch.Tensor, x_scale: torch.Tensor | None,
                     channel_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Per-block scales [N, n_blocks] with the channel scale (a folded BatchNorm) multiplied in."""
        if x_scale is not None:
            raise _input_quantizer_error()
        cs = self.channel_scale if channel_scale is None else channel_scale
        return w_scale * cs.unsqueeze(1)

    def decoded_weight(self, channel_scale: torch.Tensor | None = None) -> torch.Tensor:
        w_ints, w_scale = self.weight_quantizer.decompose(self.weight)
        scale = self.output_scale(w_scale, None, channel_scale)
        return w_ints * expand_blocks(scale, self.weight_quantizer.group_size, w_ints.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            raise _input_quantizer_error()
        channel_scale, bias = self.scale_and_bias()
        return F.linear(x, self.decoded_weight(channel_scale), bias)
