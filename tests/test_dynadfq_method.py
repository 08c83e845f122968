"""The dynadfq plug-in (static widths): data-free compile on a synthetic pool, exact export, clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import qcompile
from qcompile.cli.main import cli
from qcompile.errors import ConfigError
from qcompile.methods import get_method
from qcompile.methods.dynadfq import NestedWeightQuantizer
from qcompile.quantized_ops import QuantizedOp
from qcompile.runtime import Session
from qcompile.synthesis import SynthesisConfig, save_pool, synthesize

from conftest import TinyBNNet


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyBNNet()
    path = tmp_path_factory.mktemp("pool") / "pool.npz"
    save_pool(synthesize(model, (1, 8, 8), SynthesisConfig(images=40, batch_size=20, steps=5), mean=(0.3,),
                         std=(0.4,), device="cpu"), path)
    torch.manual_seed(0)
    return path, TinyBNNet().eval()


@pytest.mark.parametrize("options, fragment", [
    ({"bits": "2,3,4"}, "no --target-bitops"), ({"bits": "4", "target_bitops": 3.0}, "one width"),
    ({"bits": "2,3,4", "target_bitops": 5.0}, "outside the candidate widths"),
    ({"bits": "4", "bit_weight": 2.0}, "one width"),
    ({"bits": "9"}, "from 2 to 8"), ({"bits": "four"}, "from 2 to 8"), ({"bits": "4", "steps": 3}, "unknown DynaDFQ"),
])
def test_bad_options_say_what_to_do(options, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        get_method("dynadfq", options)
    assert info.value.hint


def test_data_free_compile_exports_nested_codes_exactly(pool_file, tmp_path):
    path, model = pool_file
    cm = qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq",
                          method_options={"bits": "3", "pool": str(path)})
    assert (cm.plan.spec.w_bits, cm.plan.spec.a_bits) == (3, 3)
    cm.finetune(epochs=1, lr=1e-3, optimizer="adam", kd_alpha=0.9, progress=False, batch_size=16)
    assert cm.data.name.startswith("pool:") and len(cm.data.test) == 4 and cm.normalization.mean == pytest.approx((0.3,))
    report = cm.export(tmp_path / "m.onnx")
    layers = {row[0]: row for row in json.loads(dict((p.key, p.value) for p in onnx.load(tmp_path / "m.onnx")
                                                     .metadata_props)["qcompile.manifest"])["layers"]}
    assert all(row[2:5] == [3, 3, "int4"] for row in layers.values()), layers
    x = ((cm.data.test.x - 0.3) / 0.4).astype(np.float32)
    with torch.no_grad():
        ref = cm.deployable()(torch.from_numpy(x)).numpy()
    assert np.abs(Session(tmp_path / "m.onnx", providers="cpu").predict(x) - ref).max() <= 1e-4
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(tmp_path / "m.onnx").graph.initializer}
    for name, m in cm.graph_module.named_modules():
        if isinstance(m, QuantizedOp):
            assert isinstance(m.weight_quantizer, NestedWeightQuantizer)
            codes = m.weight_quantizer.codes(m.weight.detach().cpu())
            assert np.array_equal(inits[name].astype(np.int64).reshape(codes.codes.shape), codes.codes.numpy())
    assert report is not None


def test_on_a_pool_the_float_batchnorm_statistics_are_kept_and_frozen(pool_file, tmp_path, recwarn):
    from qcompile.methods.dynadfq.step import FrozenBatchNormStep
    from qcompile.train.batchnorm_stats import statistics_unchanged

    path, model = pool_file
    cm = qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", method_options={"pool": str(path)})
    cm.calibrate()
    assert isinstance(cm.method.step_strategy(), FrozenBatchNormStep)
    cm.finetune(epochs=1, lr=1e-2, optimizer="adam", kd_alpha=1.0, progress=False, batch_size=16)
    assert statistics_unchanged(cm.graph_module, cm.float_model)
    cm.export(tmp_path / "m.onnx")
    assert not [w for w in recwarn if "BatchNorm statistics" in str(w.message)]
    real = qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", data="digits")
    assert not statistics_unchanged(real.graph_module, real.float_model)  # real data: re-estimated as usual
    assert real.method.step_strategy() is None


def test_spec_conflicts_and_two_data_sources_are_errors(pool_file):
    path, model = pool_file
    with pytest.raises(ConfigError, match="sets both widths"):
        qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", w_bits=2, method_options={"bits": "3"})
    with pytest.raises(ConfigError, match="own nested weight quantizer"):
        qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", quantizer="dorefa")
    with pytest.raises(ConfigError, match="both --data-free"):
        qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", data="digits",
                         method_options={"pool": str(path)})
    weights_only = qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", a_bits=None)
    assert (weights_only.plan.spec.w_bits, weights_only.plan.spec.a_bits) == (4, None)


@pytest.mark.parametrize("extra, fragment", [
    ((), "no --target-bitops"), (("--target-bitops", "4.5"), "outside the candidate widths")])
def test_cli_bad_selector_options_exit_2(tmp_path, extra, fragment):
    (tmp_path / "net.py").write_text("from conftest import TinyBNNet\n\ndef build():\n    return TinyBNNet()\n")
    result = CliRunner().invoke(cli, ["compile", f"{tmp_path / 'net.py'}:build", "--input-shape", "1,1,8,8",
                                      "--method", "dynadfq", "--bits", "2,3,4", *extra, "--out", tmp_path / "m.onnx",
                                      "--json"])
    assert result.exit_code == 2, result.stdout
    error = json.loads(result.stdout)["error"]
    assert fragment in error["message"] and "--target-bitops" in error["hint"] + error["message"]
    assert not (tmp_path / "m.onnx").exists()


TINY_MODEL = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))
'''


def test_synthesize_compile_run_from_the_command_line(tmp_path):
    (tmp_path / "net.py").write_text(TINY_MODEL)
    torch.save(__import__("runpy").run_path(str(tmp_path / "net.py"))["build"]().state_dict(), tmp_path / "w.pt")
    model = [f"{tmp_path / 'net.py'}:build", "--weights", tmp_path / "w.pt", "--input-shape", "1,1,8,8"]

    def invoke(*args):
        result = CliRunner().invoke(cli, [*map(str, args), "--json"])
        assert result.exit_code == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    invoke("synthesize", *model, "--images", 30, "--batch-size", 15, "--steps", 3, "--out", tmp_path / "pool.npz",
           "--device", "cpu")
    doc = invoke("compile", *model, "--method", "dynadfq", "--bits", 3, "--data-free", tmp_path / "pool.npz",
                 "--epochs", 1, "--kd-alpha", 1.0, "--out", tmp_path / "m.onnx", "--run-dir", tmp_path / "run")
    assert doc["parity"]["max_abs_diff"] <= 1e-4 and doc["parity"]["samples"] == 3
    assert doc["spec"]["w_bits"] == 3 and doc["spec"]["a_bits"] == 3
    assert not [w for w in doc.get("warnings", []) if "BatchNorm" in w["message"]]  # kept on purpose on a pool
    scored = invoke("run", tmp_path / "m.onnx", "--data", "digits")
    assert scored["samples"] > 0 and 0.0 <= scored["accuracy"] <= 1.0
    dynamic = invoke("compile", *model, "--method", "dynadfq", "--bits", "2,3,4", "--target-bitops", 3,
                     "--data-free", tmp_path / "pool.npz", "--epochs", 1, "--kd-alpha", 0.5, "--out",
                     tmp_path / "dyn.qcz", "--run-dir", tmp_path / "dyn")
    assert dynamic["parity"]["max_abs_diff"] <= 1e-4 and dynamic["parity"]["agreement"] == 1.0
    scored = invoke("run", tmp_path / "dyn.qcz", "--data", "digits")
    assert scored["samples"] > 0 and 2 <= scored["mean_bits"] <= 4 and sum(scored["configurations"].values()) == \
        scored["samples"]
    # BitOPs per image: the selector's share plus 2..4-bit layers (conv: 8·1·9·64 MACs, fc: 8·10)
    macs = 8 * 9 * 64 + 8 * 10
    assert scored["selector_bitops"] + 4 * macs <= scored["mean_bitops"] <= scored["selector_bitops"] + 16 * macs


def test_static_width_takes_its_own_activation_width(pool_file):
    """W2A4 (a §9 arm): --bits 2 with --a-bits 4 keeps 4-bit inputs; the selector's widths stay tied."""
    path, model = pool_file
    cm = qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", a_bits=4,
                          method_options={"bits": "2", "pool": str(path)})
    assert (cm.plan.spec.w_bits, cm.plan.spec.a_bits) == (2, 4)
    ops = [m for m in cm.graph_module.modules() if isinstance(m, QuantizedOp)]
    assert ops and all(m.weight_quantizer.bits == 2 and m.input_quantizer.bits == 4 for m in ops)
    assert cm.method.label(cm.plan.spec) == "dynadfq W2A4"
    with pytest.raises(ConfigError, match="sets both widths"):
        qcompile.compile(model, input_shape=(1, 1, 8, 8), method="dynadfq", a_bits=4,
                         method_options={"bits": "2,3", "target_bitops": 2.5})
