"""Quantized Conv1d/Conv2d/Linear that compute in the integer domain.

    y = op(x_ints, w_ints) · (s_x · s_w · channel_scale) + bias

``x_ints`` and ``w_ints`` are integer-valued floats, so the convolution/matmul sums integers,
which float32 does exactly (while partial sums stay below 2^24) in any order. PyTorch and ONNX
Runtime therefore agree bit for bit, and the next activation quantizer rounds the same values
in both. Without an input quantizer the op is the usual ``op(x, w_ints · s_w) + bias``.

``channel_scale`` is where a following BatchNorm is absorbed (see ``passes.fold_batchnorm``):
folding multiplies the per-channel scale and rewrites the bias, and never touches the codes.
While training, a following BatchNorm may be *attached* (``passes.attach_batchnorm``): in eval mode
the op then applies it with exactly the arithmetic folding bakes in (:func:`fold_affine`), so the
exported model reproduces the trained model in eval bit for bit, not just to rounding.
Parameters keep the float module's names (``weight``, ``bias``) so checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qcompile.quantizers.activation import ActivationQuantizer
from qcompile.quantizers.base import WeightQuantizer, along_axis


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, h) with BN(y) = g·y + h per channel, from running statistics. Not detached: with its statistics
    frozen during QAT (``TrainConfig.freeze_bn_after``) BN's γ, β and the op's bias train through the fold."""
    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    g = gamma / torch.sqrt(bn.running_var + bn.eps)
    return g, beta - bn.running_mean * g


def fold_affine(channel_scale: torch.Tensor, bias: torch.Tensor | None, g: torch.Tensor,
                h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BN(acc·s·cs + b) = acc·s·(cs·g) + (b·g + h): the one place this arithmetic is written."""
    base = bias if bias is not None else torch.zeros_like(g)
    return channel_scale * g, base * g + h


class QuantizedOp(nn.Module):
    """Shared state and math of the quantized Conv/Linear ops."""

    float_type: type[nn.Module]

    def __init__(self, float_module: nn.Module, weight_quantizer: WeightQuantizer):
        super().__init__()
        self.weight = float_module.weight
        self.bias = float_module.bias
        self.weight_quantizer = weight_quantizer
        self.input_quantizer: ActivationQuantizer | None = None
        self.register_buffer("channel_scale", torch.ones(self.weight.shape[0]))
        self.attach_batchnorm(None)
        self.set_integer_kernel(False)

    def set_integer_kernel(self, enabled: bool, output_quantizer: ActivationQuantizer | None = None) -> None:
        """Compute in eval as onnxruntime's integer kernel does (``ort-int8`` target): int32 bias, and the
        output requantised to ``output_quantizer``'s codes (or float, as QGemm without output quantization).
        The quantizer is referenced, not owned: its consumer holds it (see ``passes.integer_kernels``)."""
        object.__setattr__(self, "integer_kernel", enabled)
        object.__setattr__(self, "output_quantizer", output_quantizer)

    def attach_batchnorm(self, bn: nn.Module | None) -> None:
        """Reference (not own: it stays registered where it was) the BatchNorm that follows this op."""
        object.__setattr__(self, "attached_bn", bn)

    def scale_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``channel_scale`` and ``bias``, with an attached BatchNorm folded in when it is in eval mode."""
        bn = self.attached_bn
        if bn is None or bn.training:
            return self.channel_scale, self.bias
        return fold_affine(self.channel_scale, self.bias, *bn_affine(bn))

    def _bn_folded(self) -> bool:
        """An attached BatchNorm in training mode (batch statistics: QAT before ``freeze_bn_after``, or statistics
        being re-estimated) still follows the op: the op's output is then pre-BN, not yet on the next grid."""
        return self.attached_bn is None or not self.attached_bn.training

    def _ranges_known(self) -> bool:
        """Requantisation needs the output quantizer's settled range: while it is still observing (calibration)
        the float form runs, so it sees the true outputs and not ones clamped to its current range."""
        return self.output_quantizer is None or self.output_quantizer.settled()

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _out_view(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Broadcast a per-output-channel vector against the op's output (channels on dim 1, or last for Linear)."""
        raise NotImplementedError

    def output_scale(self, w_scale: torch.Tensor, x_scale: torch.Tensor | None,
                     channel_scale: torch.Tensor | None = None) -> torch.Tensor:
        """The per-channel factor applied after the integer op: s_x · s_w · channel_scale."""
        s = w_scale * (self.channel_scale if channel_scale is None else channel_scale)
        return s if x_scale is None else x_scale * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_scale, bias = self.scale_and_bias()
        w_ints, w_scale = self.weight_quantizer.decompose(self.weight)
        if self.input_quantizer is None:
            w = w_ints * along_axis(self.output_scale(w_scale, None, channel_scale), w_ints, 0)
            y = self._op(x, w)
        else:
            x_ints, x_scale = self.input_quantizer.decompose(x)
            if self.integer_kernel and self._bn_folded() and self._ranges_known():
                from qcompile.integer.kernel import integer_forward
                return integer_forward(self, x_ints, x_scale, w_ints, self.output_scale(w_scale, None, channel_scale),
                                       bias)
            acc = self._op(x_ints, w_ints)
            y = acc * self._out_view(self.output_scale(w_scale, x_scale, channel_scale), acc)
        if bias is not None:
            y = y + self._out_view(bias, y)
        return y

    def extra_repr(self) -> str:
        return f"{self.float_type.__name__}, weight={tuple(self.weight.shape)}, bias={self.bias is not None}"


class QuantConv(QuantizedOp):
    """Conv1d / Conv2d with quantized weight (and optionally quantized input)."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, weight_quantizer: WeightQuantizer):
        if conv.padding_mode != "zeros":
            raise ValueError(f"padding_mode={conv.padding_mode!r} is not supported for quantized convs")
        super().__init__(conv, weight_quantizer)
        self.float_type = type(conv)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        fn = F.conv1d if self.float_type is nn.Conv1d else F.conv2d
        return fn(x, w, None, self.stride, self.padding, self.dilation, self.groups)

    def _out_view(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return along_axis(t, y, 1)


class QuantLinear(QuantizedOp):
    """Linear with quantized weight (and optionally quantized input)."""

    def __init__(self, linear: nn.Linear, weight_quantizer: WeightQuantizer):
        super().__init__(linear, weight_quantizer)
        self.float_type = nn.Linear

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w)

    def _out_view(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return t


QUANTIZABLE = {nn.Conv1d: QuantConv, nn.Conv2d: QuantConv, nn.Linear: QuantLinear}


def quantize_module(module: nn.Module, weight_quantizer: WeightQuantizer) -> QuantizedOp:
    if getattr(weight_quantizer, "group_size", None) is not None:  # per-block scales: see qcompile.quantized_block
        from qcompile.quantized_block import QuantBlockLinear

        return QuantBlockLinear(module, weight_quantizer)
    return QUANTIZABLE[type(module)](module, weight_quantizer)
