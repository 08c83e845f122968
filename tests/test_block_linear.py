"""Block-quantized Linear weights (--group-size) and their export as onnxruntime's MatMulNBits."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper
from torch import nn

import qcompile
from qcompile.cli.main import cli
from qcompile.errors import ConfigError
from qcompile.export.frozen_block import pack_blocks, unpack_blocks
from qcompile.quantized_block import QuantBlockLinear
from qcompile.quantizers import BlockQuantizer
from qcompile.runtime import Session
from qcompile.runtime.engine import EXACTNESS_DISABLED_OPTIMIZERS, session_options


# ----------------------------------------------------------------------------- the quantizer
def test_one_scale_per_row_and_group_of_inputs():
    w = torch.zeros(2, 64)
    w[0, 3], w[0, 40], w[1, 10], w[1, 33] = 0.7, -1.4, 0.35, 0.07
    q = BlockQuantizer(4, 32)
    ints, scale = q.decompose(w)
    assert scale.shape == (2, 2)
    assert torch.allclose(scale, torch.tensor([[0.1, 0.2], [0.05, 0.01]]))  # max|w| / 7 per block
    assert ints[0, 3] == 7 and ints[0, 40] == -7 and ints[1, 10] == 7 and ints[1, 33] == 7
    codes = q.codes(w)
    assert int(codes.zero_point) == 8 and codes.codes.min() >= 1 and codes.codes.max() <= 15
    assert torch.equal(codes.dequantize(), q(w))


def test_a_short_last_group_has_its_own_scale():
    torch.manual_seed(0)
    w = torch.randn(3, 40)
    w[:, 32:] *= 0.01  # the 8-weight tail: a scale 100x smaller than a shared one
    q = BlockQuantizer(4, 32)
    _, scale = q.decompose(w)
    assert scale.shape == (3, 2)
    assert torch.allclose(scale[:, 1], w[:, 32:].abs().amax(dim=1) / 7)
    assert (q(w)[:, 32:] - w[:, 32:]).abs().max() <= scale[:, 1].max() / 2 + 1e-7


def test_straight_through_gradient():
    w = torch.randn(4, 64, requires_grad=True)
    BlockQuantizer(4, 32)(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # symmetric grid: every weight is inside the clamp


@pytest.mark.parametrize("bits, zero_point, lo, hi", [(2, 2, 1, 3), (8, 128, 1, 255)])
def test_two_and_eight_bit_codes(bits, zero_point, lo, hi):
    torch.manual_seed(1)
    codes = BlockQuantizer(bits, 16).codes(torch.randn(5, 48))
    assert int(codes.zero_point) == zero_point and codes.codes.min() == lo and codes.codes.max() == hi


@pytest.mark.parametrize("bits, group, message", [
    (3, 32, "--group-size needs --w-bits in 2, 4, 8, got 3"),
    (4, 24, "--group-size must be one of 16, 32, 64, 128, 256, got 24"),
])
def test_widths_and_group_sizes_matmulnbits_cannot_run_are_refused(bits, group, message):
    with pytest.raises(ConfigError, match=message):
        BlockQuantizer(bits, group)


def test_packing_is_matmulnbits_layout_with_zero_point_padding():
    codes = torch.arange(2 * 40).reshape(2, 40) % 16
    packed = pack_blocks(codes, 4, 32, 8)
    assert packed.shape == (2, 2, 16) and packed.dtype == torch.uint8
    assert int(packed[0, 0, 0]) == codes[0, 0] | (codes[0, 1] << 4)  # low nibble first, along K
    assert int(packed[1, 1, 4]) == 8 | (8 << 4)  # padding past K = 40 holds the zero point
    assert torch.equal(unpack_blocks(packed, 4, 40), codes)


# ----------------------------------------------------------------------------- options
class MLP(nn.Module):
    """K = 64 and K = 40 (not a multiple of the group): both layouts MatMulNBits takes."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 40), nn.Linear(40, 48), nn.Linear(48, 10, bias=False)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(nn.functional.gelu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.mark.parametrize("options, message", [
    ({"a_bits": 8}, "MatMulNBits, which takes float inputs, but --a-bits 8 asks for quantized activations"),
    ({"a_bits": None, "w_bits": 3}, "--group-size needs --w-bits in 2, 4, 8, got 3"),
    ({"a_bits": None, "quantizer": "dorefa"}, "--group-size works with --method ste and --quantizer uniform"),
    ({"a_bits": None, "layer_bits": {"fc1": 5}},
     "--layer-bits fc1=5: with --group-size, Linear weights need 2, 4 or 8"),
])
def test_group_size_with_what_matmulnbits_cannot_run_is_a_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        qcompile.compile(MLP(), input_shape=(1, 1, 8, 8), group_size=32, **options)


def test_cli_refuses_a_group_size_that_is_no_power_of_two(tmp_path):
    model = tmp_path / "m.py"
    model.write_text("from torch import nn\n\n\ndef build():\n"
                     "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")
    result = CliRunner().invoke(cli, ["inspect", f"{model}:build", "--input-shape", "1,1,8,8", "--a-bits", "none",
                                      "--group-size", "48", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["message"] == "--group-size must be one of 16, 32, 64, 128, 256, got 48"
    assert "power of two" in error["hint"]
    ok = CliRunner().invoke(cli, ["inspect", f"{model}:build", "--input-shape", "1,1,8,8", "--a-bits", "none",
                                  "--group-size", "32", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["sites"][0]["group_size"] == 32


# ----------------------------------------------------------------------------- export and runtime
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    cm = qcompile.compile(MLP(), input_shape=(1, 1, 8, 8), w_bits=4, a_bits=None, group_size=16, data="digits",
                          bn_reestimate_batches=0)
    path = tmp_path_factory.mktemp("nbits") / "mlp.onnx"
    report = cm.export(path)
    return cm, path, report


def test_every_linear_becomes_matmulnbits_and_the_manifest_says_so(exported):
    _, path, report = exported
    model = onnx.load(path)
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert ops.count(("com.microsoft", "MatMulNBits")) == 3 and not any(op in ("MatMul", "Gemm") for _, op in ops)
    assert {o.domain: o.version for o in model.opset_import}["com.microsoft"] == 1
    assert [layer["weight_format"] for layer in report.layers] == ["uint4-block16"] * 3
    manifest = json.loads({p.key: p.value for p in model.metadata_props}["qcompile.manifest"])
    assert manifest["contrib_ops"] == ["com.microsoft.MatMulNBits"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node
             if n.op_type == "MatMulNBits"]
    assert [(a["K"], a["N"], a["bits"], a["block_size"], a["accuracy_level"]) for a in attrs] == [
        (64, 40, 4, 16, 1), (40, 48, 4, 16, 1), (48, 10, 4, 16, 1)]


def test_packed_bytes_decode_exactly_to_the_weights_pytorch_uses(exported):
    cm, path, _ = exported
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = {name: m for name, m in cm.graph_module.named_modules() if isinstance(m, QuantBlockLinear)}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    for node, (name, op) in zip(nodes, ops.items()):
        packed, scales = inits[node.input[1]], inits[node.input[2]]
        assert packed.dtype == np.uint8 and scales.dtype == np.float32
        k = op.weight.shape[1]
        codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1)[:, :k]
        decoded = (codes.astype(np.float32) - 8) * np.repeat(scales, 16, axis=1)[:, :k]
        with torch.no_grad():
            expected = op.eval().decoded_weight().numpy()
        assert np.array_equal(decoded, expected), name


def test_onnxruntime_matches_pytorch_eval(exported):
    cm, path, _ = exported
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = cm.graph_module.eval()(torch.from_numpy(x)).numpy()
    got = Session(path, providers="cpu").run(x)
    assert np.abs(got - expected).max() <= 1e-4  # only the float summation order differs


def test_the_session_keeps_weights_packed_in_memory(exported, tmp_path):
    _, path, _ = exported
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                         disabled_optimizers=list(EXACTNESS_DISABLED_OPTIMIZERS))
    optimised = onnx.load(tmp_path / "optimised.onnx")
    assert [n.op_type for n in optimised.graph.node].count("MatMulNBits") == 3
    floats = [t for t in optimised.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    sizes = {int(np.prod(t.dims)) for t in floats}
    assert not sizes & {64 * 40, 40 * 48, 48 * 10}  # no float copy of any weight
    assert max(sizes) == 40 * 4  # the largest float tensor: fc1's scales [N = 40, K / 16 = 4 blocks]
    packed = [t for t in optimised.graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    assert sorted(int(np.prod(t.dims)) for t in packed) == sorted([40 * 64 // 2, 48 * 48 // 2, 10 * 48 // 2])


@pytest.mark.parametrize("bits", [2, 8])
def test_two_and_eight_bit_blocks_run_in_onnxruntime_as_pytorch_computes(bits, tmp_path):
    torch.manual_seed(0)
    cm = qcompile.compile(MLP(), input_shape=(1, 1, 8, 8), w_bits=bits, a_bits=None, group_size=16, data="digits",
                          bn_reestimate_batches=0)
    cm.export(tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert [onnx.helper.get_attribute_value(a) for n in nodes for a in n.attribute if a.name == "bits"] == [bits] * 3
    packed = {t.name: t for t in model.graph.initializer}[nodes[0].input[1]]
    assert list(packed.dims) == [40, 4, 16 * bits // 8]  # fc1: N = 40, K = 64 in 4 blocks of 16
    x = np.random.default_rng(2).standard_normal((16, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = cm.graph_module.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(Session(tmp_path / "m.onnx", providers="cpu").run(x) - expected).max() <= 1e-4


def test_compile_and_export_from_the_run_directory_write_the_same_bytes(tmp_path):
    model = tmp_path / "mlp.py"
    model.write_text("from torch import nn\n\n\ndef build():\n"
                     "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 40), nn.GELU(), nn.Linear(40, 10))\n")
    out, again = tmp_path / "mlp.onnx", tmp_path / "again.onnx"
    compiled = CliRunner().invoke(cli, ["compile", f"{model}:build", "--input-shape", "1,1,8,8", "--a-bits", "none",
                                        "--group-size", "32", "--epochs", "1", "--max-steps", "3",
                                        "--run-dir", str(tmp_path / "run"), "--out", str(out), "--json"])
    assert compiled.exit_code == 0, compiled.stdout
    exported = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--out", str(again), "--json"])
    assert exported.exit_code == 0, exported.stdout
    assert out.read_bytes() == again.read_bytes()
    assert [n.op_type for n in onnx.load(out).graph.node].count("MatMulNBits") == 2


def test_a_block_quantized_linear_refuses_an_input_quantizer():
    from qcompile.quantizers import ActivationQuantizer

    op = QuantBlockLinear(nn.Linear(64, 8), BlockQuantizer(4, 32))
    assert op(torch.randn(2, 64)).shape == (2, 8)
    op.input_quantizer = ActivationQuantizer(8, signed=True)
    with pytest.raises(ConfigError, match="a block-quantized Linear takes float inputs"):
        op(torch.randn(2, 64))
