"""The ort-int8 target: PyTorch eval equals onnxruntime's integer kernels, per fused op type.

Each model is compiled for ``target="ort-int8"`` on random 1×8×8 images, exported, and run in the
runtime. The bar: bit-exact outputs for QLinearConv (with and without a folded ReLU), QGemm,
QLinearGlobalAveragePool and QLinearAdd (every code of the addition equal). The optimised graph must
hold the integer kernels and no float Conv/Gemm/Add.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from qcompile.api import compile as qcompile_compile
from qcompile.data import ArrayDataset, DatasetSplits
from qcompile.errors import ConfigError
from qcompile.parity import compare_onnx, torch_logits
from qcompile.runtime import load
from qcompile.runtime.artifact import Artifact
from qcompile.runtime.engine import session_options
from qcompile.runtime.manifest import BASE_FORMAT, SESSION_TARGET_FORMAT
from qcompile.runtime.normalisation import normalise
from qcompile.runtime.widen import unpack_codes, widen_initializers


class SignedConvNet(nn.Module):
    """conv → BN (signed output grid: u8 with zero point 128) → conv → ReLU → max pool → linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv2(self.bn1(self.conv1(x))))), 1))


class ReluPoolNet(nn.Module):
    """conv-BN-ReLU ×2 → global average pool → linear (ReLU folded into unsigned grids)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResidualAdd(nn.Module):
    """A residual block whose output is the quantized addition itself (so its codes can be compared)."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv, self.bn = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        return torch.flatten(torch.relu(self.bn(self.conv(x)) + x), 1)


def _splits(n_train: int = 256, n_test: int = 1000, classes: int = 10) -> DatasetSplits:
    rng = np.random.default_rng(0)
    x = rng.random((n_train + n_test, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int64)
    return DatasetSplits.build("random", ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:]),
                               [str(i) for i in range(classes)])


def _with_statistics(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _compiled(model_type, w_bits: int = 8, target: str = "ort-int8", classes: int = 10):
    torch.manual_seed(0)
    splits = _splits(classes=classes)
    cm = qcompile_compile(_with_statistics(model_type()), input_shape=(1, 1, 8, 8), w_bits=w_bits, a_bits=8,
                          data=splits, bn_reestimate_batches=0, target=target)
    return cm, splits


def _optimised_ops(path, tmp_path) -> list[str]:
    """Op types of the graph onnxruntime runs (the file widened in memory as the runtime does)."""
    model, _ = widen_initializers(path.read_bytes())
    options = session_options(1, False, integer_kernels=True)
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]


@pytest.mark.parametrize("model_type, kernels", [
    (SignedConvNet, {"QLinearConv", "QGemm"}),
    (ReluPoolNet, {"QLinearConv", "QLinearGlobalAveragePool", "QGemm"}),
])
def test_conv_gemm_and_pool_kernels_are_bit_exact(tmp_path, model_type, kernels):
    cm, splits = _compiled(model_type)
    path = tmp_path / "m.onnx"
    cm.export(path)
    norm = cm.normalization
    parity = compare_onnx(cm.graph_module, path, splits.test, norm.mean, norm.std, providers="cpu", intra_op_threads=1)
    assert parity["max_abs_diff"] == 0.0 and parity["agreement"] == 1.0
    ops = _optimised_ops(path, tmp_path)
    assert kernels <= set(ops)
    assert not {"Conv", "Gemm", "MatMul", "Relu"} & set(ops), ops


def test_residual_add_codes_are_exact(tmp_path):
    cm, splits = _compiled(ResidualAdd, classes=512)  # the output is the addition's 8×8×8 codes
    path = tmp_path / "add.onnx"
    cm.export(path)
    norm = cm.normalization
    x = normalise(splits.test.x, norm.mean, norm.std)
    scale = float(next(m for m in cm.graph_module.modules() if type(m).__name__ == "QuantAdd").output_quantizer.scale())
    ours = torch_logits(cm.graph_module, x) / scale
    theirs = load(path, "cpu", 1).predict(x, normalize=False) / scale
    assert np.abs(np.round(ours) - ours).max() < 1e-3  # PyTorch's output is on the add's grid
    assert np.array_equal(np.round(ours), np.round(theirs))  # every code of the addition equal
    ops = _optimised_ops(path, tmp_path)
    assert "QLinearAdd" in ops and "QLinearConv" in ops and not {"Add", "Conv", "Relu"} & set(ops), ops


def test_file_keeps_packed_4bit_weights_while_the_session_runs_int8(tmp_path):
    cm, _ = _compiled(ReluPoolNet, w_bits=4)
    path = tmp_path / "w4.onnx"
    cm.export(path)
    stored = onnx.load(str(path))
    weights = [t for t in stored.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.INT4 for t in weights)
    manifest = {p.key: p.value for p in stored.metadata_props}
    assert '"target":"ort-int8"' in next(iter(manifest.values()))
    # format 2: a format-1 runtime (0.2) refuses the file instead of running it without the integer kernels
    assert Artifact.load(path).manifest.format == SESSION_TARGET_FORMAT == 2
    _, widened = widen_initializers(path.read_bytes())
    assert widened >= len(weights)
    assert "QLinearConv" in _optimised_ops(path, tmp_path)  # a kernel that only takes 8-bit weights
    assert all(t.data_type == onnx.TensorProto.INT4 for t in onnx.load(str(path)).graph.initializer if len(t.dims) >= 2)


def test_calibration_with_batchnorm_reestimation_sees_what_the_exact_target_sees():
    """While BatchNorm statistics are re-estimated (BN in training mode) a layer must not requantise its
    pre-BN output; the ranges observed afterwards equal the exact target's."""
    def build(target):
        torch.manual_seed(0)
        return qcompile_compile(_with_statistics(ReluPoolNet()), input_shape=(1, 1, 8, 8), data=_splits(),
                                bn_reestimate_batches=4, target=target).graph_module

    exact, integer = build("exact"), build("ort-int8")
    for name in ("conv2",):  # (fc sees the pool of 8-bit codes, by design not the float mean)
        a, b = exact.get_submodule(name).input_quantizer, integer.get_submodule(name).input_quantizer
        assert float(a.running_max) > 0 and float(a.running_max) == float(b.running_max)
    for bn in ("bn1", "bn2"):
        assert torch.equal(exact.get_submodule(bn).running_var, integer.get_submodule(bn).running_var)


def test_unpack_codes_sign_extends_lsb_first():
    assert unpack_codes(bytes([0x8F, 0x07]), 3, 4, True).tolist() == [-1, -8, 7]
    assert unpack_codes(bytes([0b11100100]), 4, 2, True).tolist() == [0, 1, -2, -1]
    assert unpack_codes(bytes([0b11100100]), 4, 2, False).tolist() == [0, 1, 2, 3]


def test_exact_target_is_unchanged_and_auto_picks_ort_int8_on_x86(tmp_path, monkeypatch):
    """``--target exact`` writes the format-1 file it always did; ``auto`` (the default) on an x86 CPU
    writes the ort-int8 file of the same model, and on an arm64 one the exact file."""
    def build(**target):
        torch.manual_seed(0)
        return qcompile_compile(_with_statistics(ReluPoolNet()), input_shape=(1, 1, 8, 8), data=_splits(),
                                bn_reestimate_batches=0, **target)

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    default, exact, integer = build(), build(target="exact"), build(target="ort-int8")
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    on_arm = build()
    assert (default.plan.spec.target, exact.plan.spec.target, on_arm.plan.spec.target) == ("ort-int8", "exact", "exact")
    assert "arm64 CPU" in on_arm.plan.target_reason
    for name, cm in (("auto", default), ("exact", exact), ("int8", integer), ("arm", on_arm)):
        cm.export(tmp_path / f"{name}.onnx")
    data = (tmp_path / "exact.onnx").read_bytes()
    assert data == (tmp_path / "arm.onnx").read_bytes()
    assert (tmp_path / "auto.onnx").read_bytes() == (tmp_path / "int8.onnx").read_bytes()
    ops = {n.op_type for n in onnx.load(str(tmp_path / "exact.onnx")).graph.node}
    assert "QuantizeLinear" not in ops and {"Round", "Clip"} <= ops
    assert b'"target"' not in data
    assert Artifact.load(tmp_path / "exact.onnx").manifest.format == BASE_FORMAT == 1  # old runtimes still read it


def test_ort_int8_needs_8bit_activations():
    with pytest.raises(ConfigError, match="8-bit activations"):
        qcompile_compile(
            ReluPoolNet(), input_shape=(1, 1, 8, 8), a_bits=4, target="ort-int8")


@pytest.mark.parametrize("fields, message", [
    ({"quantizer": "bwn", "w_bits": 1}, "symmetric uniform weights"),
    ({"w_bits": 1}, "symmetric uniform weights"),
    ({"quantizer": "uniform-asym"}, "symmetric uniform weights"),
    ({"method": "metaquant", "quantizer": "dorefa"}, "--method ste"),
    ({"a_bits": None}, "8-bit activations"),
])
def test_ort_int8_refuses_what_has_no_integer_kernel(fields, message):
    from qcompile.plan import QuantSpec

    with pytest.raises(ConfigError, match=message):
        QuantSpec(**{"w_bits": 4, "a_bits": 8, "target": "ort-int8", **fields}).validate()


@pytest.mark.parametrize("za, zb, zc", [(128, 0, 0), (128, 128, 128), (0, 0, 0)])
def test_add_arithmetic_matches_qlinearadd_on_every_code_pair(za, zb, zc):
    """``arith.add_codes`` against onnxruntime's QLinearAdd on all 65,536 (a, b) u8 pairs, for several scales."""
    from onnx import TensorProto, helper

    from qcompile.integer import arith

    a, b = (t.reshape(-1).astype(np.uint8) for t in np.meshgrid(np.arange(256), np.arange(256)))
    rng = np.random.default_rng(0)
    for sa, sb, sc in rng.uniform(0.005, 0.1, (4, 3)).astype(np.float32):
        consts = [helper.make_tensor(n, TensorProto.FLOAT if n.startswith("s") else TensorProto.UINT8, [], [v])
                  for n, v in (("sa", sa), ("za", za), ("sb", sb), ("zb", zb), ("sc", sc), ("zc", zc))]
        node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"],
                                domain="com.microsoft")
        graph = helper.make_graph([node], "add", [helper.make_tensor_value_info(n, TensorProto.UINT8, [a.size])
                                                  for n in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.UINT8, [a.size])], consts)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 10
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        theirs = session.run(None, {"a": a, "b": b})[0].astype(np.int64) - zc
        grid = lambda s, z: (torch.tensor(s), z, -z, 255 - z)  # noqa: E731
        ours = arith.add_codes(torch.from_numpy(a.astype(np.float32)) - za, grid(sa, za),
                               torch.from_numpy(b.astype(np.float32)) - zb, grid(sb, zb), grid(sc, zc))
        assert np.array_equal(ours.numpy().astype(np.int64), theirs)


def test_cli_compile_and_export_for_ort_int8(tmp_path):
    """``compile --target ort-int8`` (a functional global pool included) checks parity on export;
    ``export RUN_DIR`` writes the same bytes; ``export --target exact`` of that run exits 2."""
    import json

    from click.testing import CliRunner

    from qcompile.cli.main import cli
    from conftest import digits_cnn_file

    model, weights = digits_cnn_file(tmp_path)
    out, run = tmp_path / "m.onnx", tmp_path / "run"
    args = ["compile", f"{model}:build", "--weights", weights, "--input-shape", "1,1,8,8", "--w-bits", "4",
            "--target", "ort-int8", "--epochs", "0", "--bn-reestimate", "4", "--out", out, "--run-dir", run, "--json"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["spec"]["target"] == "ort-int8"
    assert summary["parity"]["max_abs_diff"] == 0.0 and summary["parity"]["agreement"] == 1.0
    assert "QLinearGlobalAveragePool" in _optimised_ops(out, tmp_path)
    again = tmp_path / "again.onnx"
    assert CliRunner().invoke(cli, ["export", str(run), "--out", str(again)]).exit_code == 0
    assert again.read_bytes() == out.read_bytes()
    refused = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "x.onnx"), "--target", "exact"])
    assert refused.exit_code == 2 and "compiled for --target ort-int8" in refused.output
