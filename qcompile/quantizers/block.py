"""Per-group (block) weight quantizer for Linear layers: the layout onnxruntime's ``MatMulNBits`` runs.

A Linear weight [N, K] is cut into groups of ``group_size`` consecutive weights along the input
dimension K; each (output row, group) has its own scale s = max|w| / (2^(b−1) − 1) over the group, and
the integers are the symmetric ``clamp(round(w / s), −(2^(b−1) − 1), 2^(b−1) − 1)`` (STE through the
rounding, scales detached, as :class:`~qcompile.quantizers.uniform.UniformQuantizer`). Small groups
follow the weights' local range, which is what makes 4-bit Linear weights hold their accuracy.

Codes are stored unsigned, ``q = ints + 2^(b−1)``: MatMulNBits decodes ``(q − zero_point) · scale`` and
its zero point defaults to 2^(b−1) when none is stored, so a symmetric grid needs no zero-point tensor.
Only 2, 4 and 8 bits: onnxruntime's kernels run no other width (its CPU kernel refuses 3, 5, 6, 7).
When K is not a multiple of the group size, the last group is shorter (its scale covers only its own
weights); export pads the codes of that group with the zero point, which decodes to 0, as MatMulNBits
expects (k_blocks = ceil(K / block_size)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qcompile.errors import ConfigError
from qcompile.quantizers.base import WeightQuantizer
from qcompile.quantizers.codes import QuantCodes, int_range
from qcompile.quantizers.ste import round_ste

BLOCK_BITS = (2, 4, 8)  # what MatMulNBits kernels run
GROUP_SIZES = (16, 32, 64, 128, 256)  # powers of two >= 16, MatMulNBits' rule


def check_block_config(bits: int, group_size: int) -> None:
    """Refuse widths and group sizes MatMulNBits cannot run, saying what would work."""
    if bits not in BLOCK_BITS:
        raise ConfigError(f"--group-size needs --w-bits in {', '.join(map(str, BLOCK_BITS))}, got {bits}",
                          hint="onnxruntime's MatMulNBits runs only 2-, 4- and 8-bit blocks; use --w-bits 4")
    if group_size not in GROUP_SIZES:
        raise ConfigError(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size!r}",
                          hint="MatMulNBits needs a power of two >= 16; 32 is the usual choice for 4-bit weights")


def expand_blocks(t: torch.Tensor, group_size: int, k: int) -> torch.Tensor:
    """A per-block [N, n_blocks] tensor repeated over each block's columns: [N, K]."""
    return t.repeat_interleave(group_size, dim=1)[:, :k]


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N, K] → [N, n_blocks, group_size], the last block zero-padded (zeros never raise a max)."""
    n, k = w.shape
    blocks = math.ceil(k / group_size)
    return F.pad(w, (0, blocks * group_size - k)).reshape(n, blocks, group_size)


@dataclass(frozen=True)
class BlockCodes(QuantCodes):
    """Codes [N, K] with one scale per (row, block) of ``group_size`` columns: ``scale`` is [N, n_blocks]."""

    group_size: int = 32

    def dequantize(self) -> torch.Tensor:
        return self.integers() * expand_blocks(self.scale, self.group_size, self.codes.shape[1])


class BlockQuantizer(WeightQuantizer):
    """Symmetric b-bit weights, one scale per (output row, group of ``group_size`` inputs)."""

    sign_symmetric = True  # W̃ = W/s

    def __init__(self, bits: int = 4, group_size: int = 32):
        super().__init__()
        check_block_config(bits, group_size)
        self.bits, self.group_size = bits, group_size
        self.qmax = int_range(bits, signed=True)[1]
        self.zero_point = 1 << (bits - 1)  # MatMulNBits' default zero point

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        """[N, n_blocks] float32 scales (detached); an all-zero block gets scale 1."""
        if w.dim() != 2:
            raise ConfigError(f"the block quantizer is for Linear weights [N, K], got a weight of shape "
                              f"{tuple(w.shape)}",
                              hint="--group-size applies to Linear layers only; Conv layers keep the per-channel grid")
        s = _grouped(w.detach(), self.group_size).abs().amax(dim=2) / self.qmax
        return torch.where(s > 0, s, torch.ones_like(s)).to(torch.float32)

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale(w)
        ints = torch.clamp(round_ste(w / expand_blocks(scale, self.group_size, w.shape[1])), -self.qmax, self.qmax)
        return ints, scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        ints, scale = self.decompose(w)
        return ints * expand_blocks(scale, self.group_size, w.shape[1])

    def codes(self, w: torch.Tensor) -> BlockCodes:
        with torch.no_grad():
            ints, scale = self.decompose(w)
        return BlockCodes(codes=ints.to(torch.int64) + self.zero_point, scale=scale,
                          zero_point=torch.tensor(self.zero_point, dtype=torch.int64), bits=self.bits, signed=False,
                          group_size=self.group_size)

    def describe(self) -> str:
        return f"block sym g{self.group_size} {self.bits}b"


def check_group_spec(spec) -> None:
    """What ``--group-size`` combines with (``spec``: a :class:`~qcompile.plan.QuantSpec`): the STE method's uniform
    quantizer, float activations (MatMulNBits takes a float input), and widths MatMulNBits runs."""
    from qcompile.validation import is_int

    if not is_int(spec.group_size):
        raise ConfigError(f"--group-size must be an integer, got {spec.group_size!r}",
                          hint=f"use one of {', '.join(map(str, GROUP_SIZES))}, e.g. --group-size 32")
    check_block_config(spec.w_bits, spec.group_size)
    for pattern, bits in spec.overrides.items():
        if bits not in (0, *BLOCK_BITS):
            raise ConfigError(f"--layer-bits {pattern}={bits}: with --group-size, Linear weights need 2, 4 or 8 bits",
                              hint=f"use '{pattern}=4' (or 8, 2), or '{pattern}=0' to keep the layer float")
    if spec.a_bits is not None:
        raise ConfigError(f"--group-size quantizes Linear weights for MatMulNBits, which takes float inputs, but "
                          f"--a-bits {spec.a_bits} asks for quantized activations",
                          hint="add --a-bits none (API: a_bits=None), or drop --group-size for per-channel weights")
    if spec.method != "ste" or spec.quantizer != "uniform":
        raise ConfigError(f"--group-size works with --method ste and --quantizer uniform, got --method {spec.method} "
                          f"--quantizer {spec.quantizer}",
                          hint="use --method ste --quantizer uniform, or drop --group-size")
