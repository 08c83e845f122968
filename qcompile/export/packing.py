"""Weight codes packed into bytes exactly as ONNX ``raw_data`` stores sub-byte integers.

A ``bits``-bit code lives in a *container* of 1, 2, 4 or 8 bits: 1/2/4/8-bit codes fill their
container, 3-bit codes sit in a 4-bit container and 5/6/7-bit codes in an 8-bit one (ONNX has no
3/5/6/7-bit types; the unused high bits cost storage, never accuracy). Codes are flattened
row-major and packed LSB-first: element ``i`` of a byte occupies bits ``[i·k, (i+1)·k)``, the
tail is zero-padded. That is the INT4/UINT4 nibble and INT2/UINT2 crumb order of the ONNX spec,
so the bytes can be retyped to INT4/INT2 without rewriting them. 1-bit codes (8 per byte) have
no ONNX type; they stay ``uint8`` and are unpacked by a small subgraph. Signed codes are stored
in two's complement.
"""

from __future__ import annotations

import math

import torch

CONTAINERS = (1, 2, 4, 8)


def container_bits(bits: int) -> int:
    """The smallest ONNX-storable width holding ``bits``-bit codes (1, 2, 4 or 8)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"codes must be 1..8 bits wide, got {bits}")
    return next(c for c in CONTAINERS if c >= bits)


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits occupy once packed (ceil(numel·k/8))."""
    return math.ceil(numel * container_bits(bits) / 8)


def weight_format(bits: int, signed: bool) -> str:
    """How the codes are stored in ONNX: ``int4``, ``uint2``, ... or ``uint8-bitpacked`` for 1 bit."""
    k = container_bits(bits)
    if k == 1:
        return "uint8-bitpacked"
    return f"{'int' if signed else 'uint'}{k}"


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Flatten ``codes`` (integers in range for their container) and pack them LSB-first into uint8."""
    k = container_bits(bits)
    per_byte = 8 // k
    flat = codes.detach().reshape(-1).to(torch.int64) & ((1 << k) - 1)  # two's complement in k bits
    pad = (-flat.numel()) % per_byte
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(per_byte, dtype=torch.int64, device=flat.device) * k
    return (flat.reshape(-1, per_byte) << shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, signed: bool, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int64 codes of ``shape``, sign-extended when ``signed``."""
    k = container_bits(bits)
    per_byte = 8 // k
    shifts = torch.arange(per_byte, dtype=torch.int64, device=packed.device) * k
    values = (packed.to(torch.int64).unsqueeze(1) >> shifts) & ((1 << k) - 1)
    values = values.reshape(-1)[: math.prod(shape)]
    if signed:
        values = torch.where(values >= (1 << (k - 1)), values - (1 << k), values)
    return values.reshape(shape)
