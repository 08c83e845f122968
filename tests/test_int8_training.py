"""QAT on the ort-int8 target trains the integer model: with BatchNorm statistics and activation ranges
frozen, the training forward is the integer kernels' arithmetic, bit for bit what eval and onnxruntime
compute, with straight-through gradients."""

from __future__ import annotations

import pytest
import torch

from qcompile.integer.kernel import float32_exact
from qcompile.parity import compare_onnx
from qcompile.train import TrainConfig
from qcompile.train.batchnorm_stats import batchnorms, freeze_batchnorm
from qcompile.runtime.normalisation import normalise
from test_int8_target import ReluPoolNet, ResidualAdd, SignedConvNet, _compiled


def _frozen_training_mode(cm) -> torch.fx.GraphModule:
    gm = cm.graph_module.train()
    for q in cm.activation_quantizers():
        q.freeze()
    freeze_batchnorm(gm)
    return gm


@pytest.mark.filterwarnings("ignore:the BatchNorm statistics are those of the float weights")
@pytest.mark.parametrize("model_type", [SignedConvNet, ReluPoolNet, ResidualAdd])
def test_training_forward_is_the_eval_and_onnxruntime_forward(tmp_path, model_type):
    cm, splits = _compiled(model_type, classes=512 if model_type is ResidualAdd else 10)
    norm = cm.normalization
    x = torch.from_numpy(normalise(splits.test.x[:64], norm.mean, norm.std))
    gm = _frozen_training_mode(cm)
    trained = gm(x)
    assert gm.training
    trained.square().mean().backward()
    with torch.no_grad():
        evaluated = gm.eval()(x)
    assert torch.equal(trained.detach(), evaluated)  # bit for bit
    path = tmp_path / "m.onnx"
    cm.export(path)
    parity = compare_onnx(gm, path, splits.test, norm.mean, norm.std, providers="cpu", intra_op_threads=1)
    assert parity["max_abs_diff"] == 0.0
    for name, p in gm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith("weight") and p.dim() > 1:
            assert p.grad.abs().sum() > 0, name


def test_batch_statistics_keep_the_float_forward():
    """Before BN freezes, a conv followed by BN cannot requantise (its output is normalised per batch)."""
    cm, splits = _compiled(SignedConvNet)
    for q in cm.activation_quantizers():
        q.freeze()
    gm = cm.graph_module.train()
    norm = cm.normalization
    x = torch.from_numpy(normalise(splits.test.x[:64], norm.mean, norm.std))
    trained = gm(x).detach()
    with torch.no_grad():
        evaluated = gm.eval()(x)
    assert not torch.equal(trained, evaluated)


def test_float32_sums_only_where_exact():
    w = torch.full((4, 3, 3, 3), 127.0)
    assert float32_exact(torch.full((1, 3, 8, 8), 255.0), w, None)  # 255·127·27 < 2^24
    assert not float32_exact(torch.full((1, 3, 8, 8), 255.0), w.repeat(1, 20, 1, 1), None)
    assert not float32_exact(torch.ones(1, 3), torch.ones(2, 3), torch.tensor([2.0 ** 24]))


@pytest.mark.filterwarnings("ignore:the BatchNorm statistics are those of the float weights")
def test_freeze_bn_after_freezes_statistics_keeps_them_and_parity(tmp_path):
    cm, splits = _compiled(SignedConvNet)
    before = {k: v.clone() for k, v in cm.graph_module.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    weight = cm.graph_module.conv1.weight.detach().clone()
    cm.finetune(splits, epochs=2, freeze_bn_after=0, lr=1e-2, batch_size=64, progress=False)
    after = cm.graph_module.state_dict()
    assert before and all(torch.equal(after[k], v) for k, v in before.items())  # frozen, and not re-estimated
    assert not torch.equal(cm.graph_module.conv1.weight, weight)
    path = tmp_path / "m.onnx"
    cm.export(path)
    norm = cm.normalization
    parity = compare_onnx(cm.graph_module, path, splits.test, norm.mean, norm.std, providers="cpu", intra_op_threads=1)
    assert parity["max_abs_diff"] == 0.0


def test_freeze_bn_after_is_validated():
    from qcompile.errors import ConfigError

    with pytest.raises(ConfigError, match="freeze_bn_after must be None or an integer >= 0"):
        TrainConfig(freeze_bn_after=-1)
    assert TrainConfig(freeze_bn_after=2).batchnorm_frozen(2) and not TrainConfig(freeze_bn_after=2).batchnorm_frozen(1)


@pytest.mark.filterwarnings("ignore:the BatchNorm statistics are those of the float weights")
def test_a_resumed_run_trains_with_the_statistics_still_frozen(tmp_path):
    cm, splits = _compiled(SignedConvNet)  # 256 training images: 4 steps per epoch
    options = {"epochs": 2, "freeze_bn_after": 1, "lr": 1e-2, "batch_size": 64, "progress": False,
               "checkpoint_dir": tmp_path, "bn_reestimate_batches": 0}
    cm.finetune(splits, max_steps=6, **options)  # stops inside the frozen epoch
    frozen = {k: v.clone() for k, v in cm.graph_module.state_dict().items() if k.endswith("running_mean")}
    cm.graph_module.train()  # as a fresh process would load it
    cm.finetune(splits, resume=True, **options)
    after = cm.graph_module.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())


def test_cli_freeze_bn_after_trains_and_keeps_parity(tmp_path):
    import json

    from click.testing import CliRunner

    from conftest import digits_cnn_file
    from qcompile.cli.main import cli

    model, weights = digits_cnn_file(tmp_path)
    base = ["compile", f"{model}:build", "--weights", weights, "--input-shape", "1,1,8,8", "--target", "ort-int8",
            "--out", tmp_path / "m.onnx", "--run-dir", tmp_path / "run", "--json"]
    result = CliRunner().invoke(cli, [str(a) for a in base + ["--epochs", "2", "--freeze-bn-after", "1"]])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["parity"]["max_abs_diff"] == 0.0 and summary["parity"]["agreement"] == 1.0
    refused = CliRunner().invoke(cli, [str(a) for a in base + ["--freeze-bn-after", "-1"]])
    assert refused.exit_code == 2 and "--freeze-bn-after" in refused.output
