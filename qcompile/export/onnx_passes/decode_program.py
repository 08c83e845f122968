"""The standard-ONNX program that decodes one layer's packed codes into its float32 weight.

    ints = (codes − zero_point) · multiplier + offset;  weight = ints [· scale along axis 0]

``decode_program`` writes that as a short straight-line program over the codes, separating the
tensors that belong to one layer (*params*: its shape, its scale, per-channel zero points) from
those fixed by the decode recipe (*consts*: the 1-bit shift amounts, the multiplier, the offset).
The lowering pass inlines a one-node program and turns a longer one into a call to a model-local
function, shared by every layer with the same recipe (``key``): the 1-bit unpack of 22 layers is
then written once.

Exactness: when ``offset`` is 0 and ``multiplier`` a power of two, ``(codes − zp) · (multiplier ·
scale)`` is one DequantizeLinear. ``multiplier · scale`` is exact (a power-of-two factor), so its
product with the small integer ``codes − zp`` is the same real number that PyTorch's
``float32(ints) · scale`` rounds once: both round it alike, bit for bit. With an offset the decode
stays ``DequantizeLinear → Add(offset) → Mul(scale)``, PyTorch's own order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from qcompile.export.packing import container_bits

CODES = ("codes", 0)  # the program's first input: the packed (retyped) codes

# (container bits, signed) → numpy dtype of the codes' zero point (1-bit codes unpack to uint8)
ZERO_POINT_DTYPES = {
    (1, False): np.uint8, (1, True): np.uint8,
    (2, True): ml_dtypes.int2, (2, False): ml_dtypes.uint2,
    (4, True): ml_dtypes.int4, (4, False): ml_dtypes.uint4,
    (8, True): np.int8, (8, False): np.uint8,
}


@dataclass(frozen=True)
class DecodeSpec:
    """Everything ``qcompile::DecodeWeight`` says about one layer (its attributes and constant inputs)."""

    bits: int
    signed: bool
    shape: tuple[int, ...]
    multiplier: int
    offset: int
    packed_bytes: int
    zero_point: np.ndarray  # int64, [] or [C]
    scale: np.ndarray | None = None  # float32 [C] (weight-only layers), else None


@dataclass
class DecodeProgram:
    """Steps ``(op_type, inputs, attributes)``; an input is ``CODES``, ``("param", i)``, ``("const", i)``
    or ``("step", j)``. The last step's output is the decoded weight."""

    params: list[np.ndarray] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)
    steps: list[tuple[str, tuple, dict]] = field(default_factory=list)

    def param(self, array: np.ndarray) -> tuple:
        self.params.append(array)
        return ("param", len(self.params) - 1)

    def const(self, array: np.ndarray) -> tuple:
        self.consts.append(array)
        return ("const", len(self.consts) - 1)

    def op(self, op_type: str, *inputs: tuple | None, **attributes) -> tuple:
        self.steps.append((op_type, inputs, attributes))
        return ("step", len(self.steps) - 1)

    def key(self) -> tuple:
        """Equal for two layers exactly when one function body serves both."""
        steps = tuple((op, inputs, tuple(sorted(attrs.items()))) for op, inputs, attrs in self.steps)
        consts = tuple((c.dtype.str, c.shape, c.tobytes()) for c in self.consts)
        return steps, consts, len(self.params)


def _is_power_of_two(m: int) -> bool:
    return m > 0 and m & (m - 1) == 0


def _unpack_bits(p: DecodeProgram, spec: DecodeSpec) -> tuple:
    """uint8 ``[bytes, 1]`` column → uint8 codes of ``shape``: bit i of byte b is element 8·b + i.
    BitShift(RIGHT) is unsigned-only, hence uint8 throughout."""
    n = math.prod(spec.shape)
    x = p.op("BitShift", CODES, p.const(np.arange(8, dtype=np.uint8)), direction="RIGHT")
    x = p.op("BitwiseAnd", x, p.const(np.array(1, np.uint8)))
    if spec.packed_bytes * 8 != n:  # padding bits in the last byte
        x = p.op("Reshape", x, p.const(np.array([-1], np.int64)))
        x = p.op("Slice", x, p.const(np.array([0], np.int64)), p.param(np.array([n], np.int64)))
    return p.op("Reshape", x, p.param(np.array(spec.shape, np.int64)))


def decode_program(spec: DecodeSpec) -> DecodeProgram:
    """The program for one layer (see the module docstring for when the scale is folded)."""
    p = DecodeProgram()
    k = container_bits(spec.bits)
    codes = _unpack_bits(p, spec) if k == 1 else CODES
    zp_dtype = ZERO_POINT_DTYPES[(k, spec.signed)]
    zero_point = spec.zero_point
    fold = spec.scale is not None and spec.offset == 0 and _is_power_of_two(spec.multiplier)
    scale = spec.scale * np.float32(spec.multiplier) if fold else None
    per_axis = (zero_point.ndim == 1 and np.unique(zero_point).size > 1) or (scale is not None and scale.size > 1)
    if per_axis:
        channels = scale.size if scale is not None else zero_point.size
        dq_scale = p.param(scale if scale is not None else np.full(channels, spec.multiplier, np.float32))
        zp = np.broadcast_to(zero_point.reshape(-1), (channels,))
        zp_ref = p.param(zp.astype(zp_dtype)) if zp.any() else None
        attrs = {"axis": 0}
    else:
        dq_scale = p.param(scale.reshape(())) if scale is not None else p.const(np.array(spec.multiplier, np.float32))
        zp = zero_point.reshape(-1)[:1].reshape(())
        zp_ref = p.const(zp.astype(zp_dtype)) if zp.any() else None
        attrs = {}
    out = p.op("DequantizeLinear", codes, dq_scale, *([zp_ref] if zp_ref is not None else []), **attrs)
    if fold:
        return p
    if spec.offset:
        out = p.op("Add", out, p.const(np.array(spec.offset, np.float32)))
    if spec.scale is not None:
        view = (-1,) + (1,) * (len(spec.shape) - 1) if spec.scale.ndim else ()
        p.op("Mul", out, p.param(spec.scale.astype(np.float32).reshape(view)))
    return p
