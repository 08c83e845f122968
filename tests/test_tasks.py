"""The Task seam: a toy second task (regression: float targets, MSE, an ``mse`` metric) trains, resumes,
evaluates, exports and is scored through the same loop, API and parity check as classification, without
a line of them changing; classification keeps its history names; the runtime half is torch-free."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import qcompile
import qcompile.methods.registry as method_registry
import qcompile.runtime.tasks as runtime_tasks
import qcompile.tasks.registry as task_registry
from qcompile.cli.main import cli
from qcompile.data import DatasetSplits
from qcompile.errors import ConfigError
from qcompile.methods import Method
from qcompile.parity import compare_onnx
from qcompile.runtime.tasks import RuntimeTask, get_runtime_task
from qcompile.tasks import Classification, Task, get_task
from qcompile.train import TrainConfig, checkpoint_path, evaluate, finetune, load_checkpoint, make_objective

MEAN, STD = (0.5, 0.4, 0.5), (0.25, 0.3, 0.2)
WEIGHTS = np.array([1.0, 2.0, -1.0], np.float32)


class Regression(Task):
    """Three float targets per sample; MSE is the loss, the ``mse`` metric and the distillation loss."""

    name = "regression"
    metrics = ("mse",)
    headline = "mse"

    def targets(self, x, y):
        return torch.from_numpy(np.asarray(y, dtype=np.float32))

    def loss(self, outputs, targets, inputs):
        return F.mse_loss(outputs, targets)

    def distillation_loss(self, student, teacher, temperature):
        return F.mse_loss(student, teacher)

    def batch_metrics(self, outputs, targets):
        return {"mse": F.mse_loss(outputs, targets).item()}

    def evaluation_sums(self, outputs, targets):
        per_sample = ((outputs - targets) ** 2).mean(dim=1).sum().item()
        return {"mse": per_sample, "loss": per_sample}


class RegressionMeasures(RuntimeTask):
    name = "regression"

    def report(self, outputs, targets):
        return {"mse": float(np.mean((outputs - targets) ** 2)), "samples": len(targets)}

    def parity(self, reference, deployed, targets):
        return {"mse_torch": float(np.mean((reference - targets) ** 2)),
                "mse_ort": float(np.mean((deployed - targets) ** 2)),
                "max_abs_diff": float(np.max(np.abs(deployed.astype(np.float64) - reference)))}

    def report_rows(self, report):
        return [("mse", f"{report['mse']:.4g}")]

    def parity_rows(self, parity):
        return [("mse (onnxruntime)", f"{parity['mse_ort']:.4g}")]


class NoDistillation(Regression):
    name = "regression-no-kd"
    distillation_loss = Task.distillation_loss


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """Both halves of the toy task registered by name, for this test only."""
    monkeypatch.setitem(task_registry._REGISTRY, "regression", Regression)
    monkeypatch.setitem(runtime_tasks._REGISTRY, "regression", RegressionMeasures())


def regression_data(n: int = 88, seed: int = 0) -> SimpleNamespace:
    """Targets are a fixed linear function of the per-channel means: learnable by a small CNN."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n, 3, 4, 4)).astype(np.float32)
    y = (x.mean(axis=(2, 3)) * WEIGHTS).astype(np.float32)
    return SimpleNamespace(x=x, y=y)


def make_net(seed: int = 0) -> nn.Module:
    """BN (buffers) and dropout (global RNG) make resume exactness non-trivial."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(64, 3))


def config(**overrides) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=0.01, optimizer="adam", schedule="cosine", seed=3, device="cpu",
                mean=MEAN, std=STD)
    return TrainConfig(**{**base, **overrides})


def numpy_mse(model: nn.Module, data) -> float:
    """The test MSE computed outside the loop: normalise, forward in eval mode, average in float64."""
    model.eval()
    shape = (1, 3, 1, 1)
    x = (data.x - np.array(MEAN, np.float32).reshape(shape)) / np.array(STD, np.float32).reshape(shape)
    with torch.no_grad():
        out = model(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)
    return float(np.mean((out - data.y) ** 2))


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# ---------------------------------------------------------------- a second task through the same loop


def test_a_regression_task_trains_through_the_loop_with_its_own_metrics():
    train, test = regression_data(), regression_data(40, seed=1)
    model = make_net()
    before = numpy_mse(model, test)
    result = finetune(model, train, test, config(), progress=False, task="regression")
    assert list(result.history[0]) == ["epoch", "train_loss", "train_mse", "test_mse", "test_loss", "lr", "seconds"]
    assert result.final_test == {"mse": result.history[-1]["test_mse"], "loss": result.history[-1]["test_loss"]}
    assert result.final_test_acc is None  # classification's convenience name: not this task's
    after = numpy_mse(model, test)
    assert result.final_test["mse"] == pytest.approx(after, rel=1e-5)
    assert after < before / 2
    # the epoch's train_mse is the batch-size-weighted mean of per-batch MSEs: equal to the loss here
    assert [r["train_mse"] for r in result.history] == pytest.approx([r["train_loss"] for r in result.history])


def test_regression_resume_mid_epoch_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    train, test = regression_data(), regression_data(40, seed=1)
    teacher = make_net(seed=7).eval()  # distillation defined by the task (MSE to the teacher)
    full = make_net()
    reference = finetune(full, train, test, config(kd_alpha=0.5), teacher=teacher, progress=False, task="regression")

    partial = finetune(make_net(), train, test, config(kd_alpha=0.5, max_steps=9, checkpoint_every=4),
                       teacher=teacher, checkpoint_dir=tmp_path, progress=False, task="regression")
    assert partial.steps == 9 and not partial.completed
    assert load_checkpoint(checkpoint_path(tmp_path))["task"] == "regression"

    resumed_model = make_net(seed=123)
    resumed = finetune(resumed_model, train, test, config(kd_alpha=0.5), teacher=teacher, checkpoint_dir=tmp_path,
                       resume=True, progress=False, task=Regression())
    assert resumed.completed and resumed.steps == reference.steps == 18
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert without_seconds(resumed.history) == without_seconds(reference.history)
    assert resumed.final_test == reference.final_test

    with pytest.raises(ConfigError, match="trained for task 'regression', this run is for 'classification'") as err:
        finetune(make_net(), train, test, config(kd_alpha=0.5), teacher=teacher, checkpoint_dir=tmp_path,
                 resume=True, progress=False)
    assert "task='regression'" in err.value.hint


def test_distillation_blends_the_tasks_own_losses():
    torch.manual_seed(0)
    student, targets, teacher_out = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    teacher = nn.Identity()  # teacher(inputs) = inputs: pass the teacher's outputs as the inputs
    loss = make_objective(teacher, kd_alpha=0.25, task="regression")(student, targets, teacher_out)
    expected = 0.75 * F.mse_loss(student, targets) + 0.25 * F.mse_loss(student, teacher_out)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert make_objective(task="regression")(student, targets, teacher_out).item() == pytest.approx(
        F.mse_loss(student, targets).item(), rel=1e-6)


def test_distillation_for_a_task_without_one_is_refused_before_training():
    assert Regression().distils and Classification().distils and not NoDistillation().distils
    model = make_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="kd_alpha=0.5 asks for distillation, which task 'regression-no-kd'") as err:
        finetune(model, regression_data(), None, config(kd_alpha=0.5), teacher=make_net(1), progress=False,
                 task=NoDistillation())
    assert err.value.hint == "set kd_alpha=0 (CLI: --kd-alpha 0)"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_unknown_task_names_are_config_errors_listing_the_known_ones():
    with pytest.raises(ConfigError, match="unknown task 'segmentation'") as err:
        get_task("segmentation")
    assert "classification, codec, regression" in err.value.hint
    assert get_task(None).name == "classification" and isinstance(get_task("regression"), Regression)


# ---------------------------------------------------------------- classification keeps its names and numbers


def test_classification_history_keeps_its_names_and_its_accuracy_is_top1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=64).astype(np.int64)
    x = rng.uniform(0.0, 0.4, size=(64, 3, 4, 4)).astype(np.float32)
    x[np.arange(64), y] += 0.5
    data = SimpleNamespace(x=x, y=y)
    model = make_net()
    result = finetune(model, data, data, config(epochs=2), progress=False)
    assert list(result.history[-1]) == ["epoch", "train_loss", "train_acc", "test_acc", "test_loss", "lr", "seconds"]
    shape = (1, 3, 1, 1)
    xn = (x - np.array(MEAN, np.float32).reshape(shape)) / np.array(STD, np.float32).reshape(shape)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(xn)).numpy()
    assert result.final_test_acc == float(np.mean(logits.argmax(1) == y))
    assert result.final_test == evaluate(model, data, batch_size=16, mean=MEAN, std=STD)  # the loop evaluates in its batches


# ---------------------------------------------------------------- API: task choice, saved runs, export parity


MODEL_FILE = """
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
"""


def regression_splits() -> DatasetSplits:
    # ArrayDataset holds int64 labels; any object with numpy .x/.y carries float targets
    train, test = regression_data(256), regression_data(64, seed=1)
    return DatasetSplits("toy-regression", train, test, [], MEAN, STD)


class ToyRegressionMethod(Method):
    name = "toy-regression"

    def task(self):
        return "regression"


def test_a_method_names_its_task_and_a_conflicting_request_is_refused(monkeypatch):
    monkeypatch.setitem(method_registry._REGISTRY, ToyRegressionMethod.name, ToyRegressionMethod)
    net = make_net()
    cm = qcompile.compile(net, input_shape=(1, 3, 4, 4), method="toy-regression", w_bits=4, a_bits=None)
    assert cm.task.name == "regression"
    assert qcompile.compile(net, input_shape=(1, 3, 4, 4), w_bits=4, a_bits=None).task.name == "classification"
    with pytest.raises(ConfigError, match="method 'toy-regression' trains for task 'regression', not 'classification'"):
        qcompile.compile(net, input_shape=(1, 3, 4, 4), method="toy-regression", task="classification")


def test_api_regression_finetune_save_reload_export_and_parity(tmp_path):
    from qcompile.run_dir import load_run, save_run

    (tmp_path / "toy.py").write_text(MODEL_FILE)
    spec, splits = f"{tmp_path / 'toy.py'}:build", regression_splits()
    torch.manual_seed(0)
    cm = qcompile.compile(spec, input_shape=(1, 3, 4, 4), w_bits=8, a_bits=8, data=splits, task="regression")
    before = cm.evaluate()
    cm.finetune(epochs=2, lr=0.01, optimizer="adam", batch_size=32, seed=0, device="cpu", progress=False,
                checkpoint_dir=tmp_path / "ckpt")
    summary = cm.metrics()
    assert set(summary) == {"mse", "loss"} and cm.evaluate() == summary["mse"] < before
    assert summary["mse"] == pytest.approx(numpy_mse(cm.graph_module, splits.test), rel=1e-5)
    assert cm.history[-1]["test_mse_bn_reestimated"] == summary["mse"]  # BN re-estimated through the task

    save_run(cm, tmp_path / "run")
    reloaded = load_run(tmp_path / "run")
    assert reloaded.task.name == "regression"
    assert reloaded.metrics(splits) == summary

    exported = cm.export(tmp_path / "toy.onnx").path
    parity = compare_onnx(cm.graph_module, exported, splits.test, MEAN, STD, task=cm.task)
    assert set(parity) == {"mse_torch", "mse_ort", "max_abs_diff", "samples"} and parity["samples"] == 64
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["mse_torch"] == pytest.approx(summary["mse"], rel=1e-5)

    # the artifact records its task, and scoring it uses that task unless told otherwise
    from qcompile.runtime.scoring import score
    from qcompile.runtime.session import Session

    assert Session(exported).artifact.manifest.task == "regression"
    report = score(exported, splits)
    assert report["task"] == "regression" and report["mse"] == pytest.approx(parity["mse_ort"], rel=1e-6)


# ---------------------------------------------------------------- the runtime half


def test_classification_measures_report_and_parity_on_a_hand_built_case():
    measures = get_runtime_task("classification")
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    labels = np.array([0, 1, 1, 2])
    assert measures.report(logits, labels) == {"accuracy": 0.75, "correct": 3, "samples": 4}
    assert measures.report_rows({"accuracy": 0.75, "correct": 3, "samples": 4}) == [("accuracy", "75.00% (3/4)")]
    deployed = logits.copy()
    deployed[2] = [0.0, 0.5, 0.0]  # a flipped top-1, now correct
    assert measures.parity(logits, deployed, labels) == {"acc_torch": 0.75, "acc_ort": 1.0, "max_abs_diff": 1.0,
                                                         "agreement": 0.75}


def test_classification_measures_refuse_outputs_that_are_not_scores_per_sample():
    from qcompile.runtime import TaskError

    with pytest.raises(TaskError, match=r"must be \(samples, classes\) scores for 3 samples, got shape \(3,\)") as err:
        get_runtime_task("classification").report(np.zeros(3, np.float32), np.zeros(3, np.int64))
    assert "task it was trained for" in err.value.hint


def test_run_with_an_unknown_task_exits_2_naming_the_known_ones(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the task is checked first")
    result = CliRunner().invoke(cli, ["run", str(model), "--data", "digits", "--task", "codec"])
    assert result.exit_code == 2
    assert "unknown task 'codec'" in result.stderr and "classification" in result.stderr


TORCH_BLOCKED = r"""
import json, sys
import numpy as np
from qcompile.runtime.tasks import RuntimeTask, get_runtime_task, register_runtime_task

@register_runtime_task
class Bits(RuntimeTask):
    name = "bits"
    def report(self, outputs, targets):
        return {"mean_bits": float(outputs.mean())}
    def parity(self, reference, deployed, targets):
        return {"same": bool((reference == deployed).all())}
    def report_rows(self, report):
        return [("mean bits", str(report["mean_bits"]))]
    def parity_rows(self, parity):
        return [("same", str(parity["same"]))]

logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
print(json.dumps({
    "report": get_runtime_task("classification").report(logits, np.array([1, 0, 0])),
    "bits": get_runtime_task("bits").report(np.array([4.0, 8.0]), None),
    "torch": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
}))
"""


def test_runtime_tasks_score_and_register_without_torch(python_without):
    done = python_without(TORCH_BLOCKED)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"report": {"accuracy": 2 / 3, "correct": 2, "samples": 3}, "bits": {"mean_bits": 6.0},
                   "torch": False}
