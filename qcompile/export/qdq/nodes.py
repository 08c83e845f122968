"""Standard ONNX QuantizeLinear / DequantizeLinear nodes emitted from PyTorch (``torch.onnx.ops.symbolic``)."""

from __future__ import annotations

import torch

QDQ_OPSET = 21


def quantize_dequantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``DequantizeLinear(QuantizeLinear(x))`` with a uint8 zero point: the activation pair ORT fuses on."""
    q = torch.onnx.ops.symbolic("QuantizeLinear", [x, scale, zero_point], attrs={}, dtype=torch.uint8,
                                shape=x.shape, version=QDQ_OPSET)
    return torch.onnx.ops.symbolic("DequantizeLinear", [q, scale, zero_point], attrs={}, dtype=torch.float32,
                                   shape=x.shape, version=QDQ_OPSET)


def dequantize_bias(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``DequantizeLinear(int32 codes, per-channel scale, axis 0)``: the bias form QLinearConv/QGemm take."""
    return torch.onnx.ops.symbolic("DequantizeLinear", [codes, scale], attrs={"axis": 0}, dtype=torch.float32,
                                   shape=codes.shape, version=QDQ_OPSET)


def zero_point(signed: bool) -> torch.Tensor:
    """uint8 zero point of an 8-bit grid: signed codes [−128, 127] are stored as u8 with zero point 128."""
    return torch.tensor(128 if signed else 0, dtype=torch.uint8)
