"""FreezeForExport and the frozen ops: packed codes, buffers only, bitwise-equal eager outputs."""

from __future__ import annotations

import copy
import dataclasses
import math

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from qcompile.errors import ExportError
from qcompile.export.frozen_ops import FrozenQuantizedOp
from qcompile.export.packing import container_bits, pack_codes, packed_nbytes, unpack_codes
from qcompile.passes.freeze_for_export import FreezeForExport
from qcompile.passes.pipeline import export_passes, quantize_passes, run_passes
from qcompile.passes.trace import trace
from qcompile.plan import QuantSpec, build_plan
from qcompile.quantized_ops import QuantizedOp


def tiny_cnn() -> nn.Module:
    """Five quantizable sites ('0', '3', '6', '8', '11') with BatchNorm after three of them."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 1), nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 10),
    )


def tiny_conv1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10, 4))


def build_quantized(spec: QuantSpec, model_fn=tiny_cnn, input_shape=(3, 6, 6), seed: int = 0):
    """A quantized, calibrated, stripped and BN-folded GraphModule, plus an example batch."""
    torch.manual_seed(seed)
    model = model_fn()
    with torch.no_grad():  # non-trivial BN statistics so folding changes channel_scale and bias
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    gm = trace(model)
    gm, _ = run_passes(gm, quantize_passes(build_plan(gm, spec)))
    gm.train()
    with torch.no_grad():
        for _ in range(3):
            gm(torch.randn(16, *input_shape))
    gm, _ = run_passes(gm, export_passes())
    return gm, torch.randn(5, *input_shape)


def frozen_copy(gm):
    frozen = copy.deepcopy(gm)
    FreezeForExport()(frozen)
    return frozen


SPECS = [
    QuantSpec(w_bits=b, a_bits=a, quantizer=q, per_channel=pc)
    for q, pc in (("uniform", True), ("uniform", False), ("uniform-asym", True), ("uniform-asym", False))
    for b in (1, 2, 3, 4, 5, 8)
    for a in (None, 4, 8)
] + [QuantSpec(w_bits=b, a_bits=a, quantizer="dorefa") for b in (1, 2, 3) for a in (None, 8)] + [
    QuantSpec(w_bits=1, a_bits=a, quantizer="bwn", per_channel=pc) for pc in (False, True) for a in (None, 4)
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.quantizer}-pc{s.per_channel}-w{s.w_bits}-a{s.a_bits}")
def test_frozen_graph_is_bitwise_equal(spec):
    gm, x = build_quantized(spec)
    frozen = frozen_copy(gm)
    with torch.no_grad():
        assert torch.equal(frozen(x), gm(x))


def test_frozen_conv1d_is_bitwise_equal():
    gm, x = build_quantized(QuantSpec(w_bits=4, a_bits=8), tiny_conv1d, input_shape=(3, 12))
    with torch.no_grad():
        assert torch.equal(frozen_copy(gm)(x), gm(x))


def test_frozen_ops_hold_packed_codes_and_only_buffers():
    gm, _ = build_quantized(QuantSpec(w_bits=3, a_bits=4, quantizer="uniform-asym", overrides={"3": 1, "8": 2}))
    frozen = frozen_copy(gm)
    assert not list(frozen.parameters())
    ops = {name: m for name, m in frozen.named_modules() if isinstance(m, FrozenQuantizedOp)}
    assert set(ops) == {"0", "3", "6", "8", "11"} and not any(isinstance(m, QuantizedOp) for m in frozen.modules())
    for name, op in ops.items():
        original = gm.get_submodule(name)
        expected = original.weight_quantizer.codes(original.weight)
        n = original.weight.numel()
        assert op.packed_weight.dtype == torch.uint8
        assert op.packed_weight.numel() == math.ceil(n * container_bits(op.bits) / 8)
        assert torch.equal(op.codes().codes, expected.codes)
        assert torch.equal(op.zero_point, expected.zero_point)
        assert (op.qmin, op.qmax) == (original.input_quantizer.qmin, original.input_quantizer.qmax)
    assert ops["3"].packed_weight.numel() == math.ceil(ops["3"].weight_shape[0] * 4 * 9 / 8)  # 1 bit: ceil(N/8)


def test_report_lists_layers():
    gm, _ = build_quantized(QuantSpec(w_bits=4, a_bits=None, overrides={"0": 2, "11": 6}))
    freeze = FreezeForExport()
    freeze(gm)
    layers = {layer["name"]: layer for layer in freeze.report["layers"]}
    assert layers["0"] == {"name": "0", "op": "Conv2d", "w_bits": 2, "a_bits": None, "weight_format": "int2"}
    assert layers["11"]["weight_format"] == "int8" and layers["8"]["op"] == "Linear"


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_pack_roundtrip(bits, signed):
    if bits == 1 and signed:
        pytest.skip("1-bit codes are unsigned")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = torch.randint(lo, hi + 1, (5, 3, 7))  # 105 elements: exercises the zero-padded tail
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(codes.numel(), bits)
    assert torch.equal(unpack_codes(packed, bits, signed, tuple(codes.shape)), codes)


@pytest.mark.parametrize("bits,signed,np_dtype", [
    (4, True, ml_dtypes.int4), (4, False, ml_dtypes.uint4), (3, True, ml_dtypes.int4),
    (2, True, ml_dtypes.int2), (2, False, ml_dtypes.uint2),
])
def test_packing_matches_onnx_raw_data(bits, signed, np_dtype):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = torch.randint(lo, hi + 1, (3, 11))
    raw = onnx.numpy_helper.from_array(codes.numpy().astype(np_dtype)).raw_data
    assert pack_codes(codes, bits).numpy().tobytes() == raw


def test_one_bit_packing_is_lsb_first():
    bits = torch.randint(0, 2, (29,))
    expected = np.packbits(bits.numpy().astype(np.uint8), bitorder="little")
    assert pack_codes(bits, 1).numpy().tobytes() == expected.tobytes()


def test_refuses_training_mode_and_inconsistent_codes():
    gm, _ = build_quantized(QuantSpec(w_bits=4, a_bits=8))
    training = copy.deepcopy(gm).train()
    with pytest.raises(ExportError, match="training mode"):
        FreezeForExport()(training)
    quantizer = gm.get_submodule("3").weight_quantizer
    good = quantizer.codes

    def off_by_one(w):
        c = good(w)
        return dataclasses.replace(c, codes=c.codes.clamp(max=c.qmax - 1))

    quantizer.codes = off_by_one
    with pytest.raises(ExportError, match="do not decode"):
        FreezeForExport()(gm)
