"""Tests of qcompile.train: determinism, bitwise resume, KD math, optimizers, evaluation, config
errors, callbacks and atomic checkpoints. Tiny models on synthetic data, CPU, a few seconds."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from qcompile.errors import ConfigError, DataError
from qcompile.modes import preserved_modes
from qcompile.train import (
    Batches,
    StandardStep,
    StepStrategy,
    TrainConfig,
    checkpoint_path,
    evaluate,
    finetune,
    kd_loss,
    load_checkpoint,
    make_objective,
    save_checkpoint,
)
from qcompile.train.objective import cross_entropy
from qcompile.train.progress import TrainProgress

MEAN, STD = (0.5, 0.4, 0.5), (0.25, 0.3, 0.2)


def make_data(n: int = 88, seed: int = 0, classes: int = 3) -> SimpleNamespace:
    """Separable NCHW data in [0, 1]: each class lights up its own channel."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n).astype(np.int64)
    x = rng.uniform(0.0, 0.4, size=(n, 3, 4, 4)).astype(np.float32)
    x[np.arange(n), y % 3] += 0.5
    return SimpleNamespace(x=x, y=y)


def make_cnn(seed: int = 0) -> nn.Module:
    """BN (buffers) and dropout (global RNG) make resume exactness non-trivial."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(64, 3),
    )


def config(**overrides) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=1e-4,
                schedule="step", step_size=1, gamma=0.5, seed=3, device="cpu", mean=MEAN, std=STD)
    return TrainConfig(**{**base, **overrides})


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# ---------------------------------------------------------------- determinism and resume


def test_two_runs_with_the_same_seed_are_identical():
    train, test = make_data(), make_data(40, seed=1)
    a, b = make_cnn(), make_cnn()
    ra = finetune(a, train, test, config(), progress=False)
    rb = finetune(b, train, test, config(), progress=False)
    assert_same_weights(a, b)
    assert without_seconds(ra.history) == without_seconds(rb.history)
    c = make_cnn()
    finetune(c, train, test, config(seed=4), progress=False)
    assert not torch.equal(a.state_dict()["5.weight"], c.state_dict()["5.weight"])


@pytest.mark.parametrize("variant", ["sgd-step", "adam-cosine-kd"])
def test_resume_mid_epoch_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, variant):
    train, test = make_data(), make_data(40, seed=1)  # 88 samples / 16 → 6 batches per epoch
    extra = {} if variant == "sgd-step" else dict(optimizer="adam", lr=0.01, schedule="cosine", kd_alpha=0.5)
    teacher = make_cnn(seed=7).eval() if "kd" in variant else None

    full = make_cnn()
    reference = finetune(full, train, test, config(**extra), teacher=teacher, progress=False)

    first = make_cnn()
    partial = finetune(first, train, test, config(max_steps=9, checkpoint_every=4, **extra), teacher=teacher,
                       checkpoint_dir=tmp_path, progress=False)
    assert partial.steps == 9 and not partial.completed
    saved = load_checkpoint(checkpoint_path(tmp_path))
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 3, 9)

    resumed_model = make_cnn(seed=123)  # different init: everything must come from the checkpoint
    resumed = finetune(resumed_model, train, test, config(**extra), teacher=teacher,
                       checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.completed and resumed.steps == reference.steps == 18
    assert_same_weights(full, resumed_model)
    assert without_seconds(resumed.history) == without_seconds(reference.history)
    assert resumed.final_test_acc == reference.final_test_acc


def test_resume_after_a_crash_from_a_periodic_checkpoint(tmp_path):
    train = make_data()
    full = make_cnn()
    finetune(full, train, None, config(), progress=False)

    def crash(event, state):
        if event == "step_end" and state.global_step == 11:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(make_cnn(), train, None, config(checkpoint_every=5), checkpoint_dir=tmp_path,
                 progress=False, callbacks=[crash])
    saved = load_checkpoint(checkpoint_path(tmp_path))
    assert (saved["epoch"], saved["step_in_epoch"], saved["global_step"]) == (1, 4, 10)

    model = make_cnn(seed=5)
    finetune(model, train, None, config(checkpoint_every=5), checkpoint_dir=tmp_path, resume=True,
             progress=False)
    assert_same_weights(full, model)


def test_resume_refuses_missing_or_incompatible_checkpoints(tmp_path):
    train = make_data()
    with pytest.raises(ConfigError, match="no checkpoint") as err:
        finetune(make_cnn(), train, config=config(), checkpoint_dir=tmp_path, resume=True, progress=False)
    assert err.value.hint

    finetune(make_cnn(), train, config=config(max_steps=2), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        finetune(make_cnn(), train, config=config(seed=9), checkpoint_dir=tmp_path, resume=True,
                 progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        finetune(make_cnn(), train, config=config(batch_size=8), checkpoint_dir=tmp_path, resume=True,
                 progress=False)
    other_model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    with pytest.raises(ConfigError, match="model does not match"):
        finetune(other_model, train, config=config(), checkpoint_dir=tmp_path, resume=True, progress=False)
    # max_steps / checkpoint_every may change on resume
    result = finetune(make_cnn(), train, config=config(checkpoint_every=3), checkpoint_dir=tmp_path,
                      resume=True, progress=False)
    assert result.completed


# ---------------------------------------------------------------- objective


def test_kd_loss_matches_a_hand_computation():
    student = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = np.array([[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]])
    temperature = 2.0

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_t, p_s = softmax(teacher / temperature), softmax(student / temperature)
    expected_kd = temperature**2 * np.sum(p_t * (np.log(p_t) - np.log(p_s))) / 2
    s, t = torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64)
    assert kd_loss(s, t, temperature).item() == pytest.approx(expected_kd, rel=1e-12)

    targets = np.array([1, 2])
    expected_ce = -np.mean(np.log(softmax(student))[np.arange(2), targets])
    teacher_net = nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        teacher_net.weight.copy_(torch.eye(3, dtype=torch.float64))
    teacher_net.train()
    objective = make_objective(teacher_net, kd_alpha=0.3, kd_temperature=temperature)
    s.requires_grad_(True)
    loss = objective(s, torch.tensor(targets), t)  # teacher(inputs=t) = t
    assert loss.item() == pytest.approx(0.7 * expected_ce + 0.3 * expected_kd, rel=1e-12)
    assert not teacher_net.training
    loss.backward()
    assert teacher_net.weight.grad is None and s.grad is not None


def test_make_objective_without_teacher_or_alpha_is_cross_entropy():
    assert make_objective() is cross_entropy
    assert make_objective(nn.Linear(3, 3), kd_alpha=0.0) is cross_entropy
    assert make_objective(None, kd_alpha=0.5) is cross_entropy


# ---------------------------------------------------------------- StandardStep


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_standard_step_updates_weights_like_torch_optim(opt):
    torch.manual_seed(0)
    inputs, targets = torch.randn(8, 5), torch.randint(0, 3, (8,))
    ours, reference = nn.Linear(5, 3), nn.Linear(5, 3)
    reference.load_state_dict(ours.state_dict())
    before = ours.weight.detach().clone()

    cfg = TrainConfig(lr=0.1, optimizer=opt, momentum=0.9, weight_decay=1e-3, schedule="constant")
    step = StandardStep()
    step.setup(ours, cfg)
    if opt == "sgd":
        optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    else:
        optimizer = torch.optim.Adam(reference.parameters(), lr=0.1, weight_decay=1e-3)
    for _ in range(3):
        out = step.step(ours, inputs, targets, cross_entropy)
        optimizer.zero_grad()
        reference_outputs = reference(inputs)
        loss = F.cross_entropy(reference_outputs, targets)
        loss.backward()
        optimizer.step()
        # the step reports the loss and the outputs of its forward (the task reads metrics from them)
        assert out.loss == loss.item()
        assert torch.equal(out.outputs, reference_outputs)
    assert not torch.equal(ours.weight, before)
    assert_same_weights(ours, reference)
    assert step.state_dict()["optimizer"]["state"]  # momentum buffers / Adam moments exist


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.1, 0.1, 0.1]),
    ("step", [0.1, 0.05, 0.025]),
    ("cosine", [0.1, 0.1 * (1 + math.cos(math.pi / 4)) / 2, 0.05]),
])
def test_schedules_advance_per_epoch(schedule, expected):
    step = StandardStep()
    step.setup(nn.Linear(2, 2), TrainConfig(epochs=4, lr=0.1, schedule=schedule, step_size=1, gamma=0.5))
    lrs = []
    for epoch in range(3):
        lrs.append(step.lr)
        step.epoch_end(epoch)
    assert lrs == pytest.approx(expected)


# ---------------------------------------------------------------- evaluation and batches


def test_evaluate_on_a_hand_built_case_and_restores_modes():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Dropout(0.5))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
    x = np.array([[1, 0], [0, 1], [1, 0], [0.2, 0.9]], dtype=np.float32)
    y = np.array([0, 1, 1, 1], dtype=np.int64)
    logits = x.astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected_loss = -np.mean(log_p[np.arange(4), y])

    model.train()
    model[1].eval()  # a deliberately frozen submodule must stay frozen
    summary = evaluate(model, SimpleNamespace(x=x, y=y), batch_size=3)  # dropout off → deterministic
    assert list(summary) == ["acc", "loss"]
    assert summary["acc"] == 0.75
    assert summary["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert model.training and model[0].training and not model[1].training

    # normalisation (x - mean) / std is applied before the model: here it flips the 4th prediction
    acc = evaluate(model, SimpleNamespace(x=x, y=y), mean=(0.0, 0.0), std=(1.0, 0.1))["acc"]
    assert acc == 1.0 - 0.25  # rows: 0→0 ✓, 1→1 ✓, 2→0 ✗, 3→1 ✓


def test_batches_normalise_per_channel_and_cover_the_order():
    data = make_data(10)
    batches = Batches(data, 4, torch.device("cpu"), MEAN, STD)
    assert len(batches) == 3
    order = np.arange(10)[::-1]
    got = list(batches.in_order(order, start=1))
    assert [len(t) for _, t in got] == [4, 2]
    expected = (data.x[order[4:8]] - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    np.testing.assert_allclose(got[0][0].numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(got[0][1], torch.from_numpy(data.y[order[4:8]]))


def test_finetune_learns_separable_data():
    train, test = make_data(256), make_data(128, seed=1)
    result = finetune(make_cnn(), train, test, config(epochs=4, gamma=0.7), progress=False)
    assert result.final_test_acc > 0.9
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    keys = {"epoch", "train_loss", "train_acc", "test_acc", "test_loss", "lr", "seconds"}
    assert set(result.history[0]) >= keys


def test_max_steps_stops_early_writes_a_checkpoint_and_evaluates(tmp_path):
    result = finetune(make_cnn(), make_data(), make_data(20, seed=1), config(max_steps=4),
                      checkpoint_dir=tmp_path, progress=False)
    assert (result.steps, result.completed, result.history) == (4, False, [])
    assert result.final_test_acc is not None
    assert load_checkpoint(checkpoint_path(tmp_path))["global_step"] == 4


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, match, hint", [
    (dict(optimizer="rmsprop"), "unknown optimizer", "sgd, adam"),
    (dict(schedule="linear"), "unknown schedule", "cosine, step, constant"),
    (dict(lr=0), "lr must be", "lr="),
    (dict(batch_size=0), "batch_size", "batch_size="),
    (dict(kd_alpha=1.5), "kd_alpha", "distillation"),
    (dict(mean=(0.5,)), "together", "per input channel"),
    (dict(mean=(0.5, 0.5), std=(0.2,)), "mean has 2", "per input channel"),
    (dict(std=(0.0,), mean=(0.0,)), "std values", "per input channel"),
    (dict(max_steps=0), "max_steps", "max_steps=None"),
])
def test_bad_config_raises_config_error_with_a_hint(overrides, match, hint):
    with pytest.raises(ConfigError, match=match) as err:
        TrainConfig(**overrides)
    assert hint in err.value.hint


def test_config_is_json_serialisable_and_round_trips():
    cfg = config()
    assert TrainConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})


def test_finetune_argument_errors(tmp_path):
    train = make_data(16)
    with pytest.raises(ConfigError, match="no teacher"):
        finetune(make_cnn(), train, config=config(kd_alpha=0.5), progress=False)
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        finetune(make_cnn(), train, config=config(checkpoint_every=2), progress=False)
    with pytest.raises(ConfigError, match="mean/std have 3 values"):
        finetune(nn.Linear(2, 2), SimpleNamespace(x=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64)),
                 config=config(), progress=False)
    with pytest.raises(DataError):
        finetune(make_cnn(), SimpleNamespace(x=train.x, y=train.y[:3]), config=config(), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            finetune(make_cnn(), train, config=config(device="cuda"), progress=False)


# ---------------------------------------------------------------- callbacks, strategies, progress


def test_callbacks_receive_events_in_order():
    events = []
    finetune(make_cnn(), make_data(40), None, config(epochs=2, batch_size=16), progress=False,
             callbacks=[lambda event, s: events.append((event, s.epoch, s.step_in_epoch, s.global_step))])
    assert events == [
        ("step_end", 0, 1, 1), ("step_end", 0, 2, 2), ("step_end", 0, 3, 3), ("epoch_end", 0, 3, 3),
        ("step_end", 1, 1, 4), ("step_end", 1, 2, 5), ("step_end", 1, 3, 6), ("epoch_end", 1, 3, 6),
    ]


class CountingStep(StepStrategy):
    """A plug-in that wraps StandardStep and keeps its own state (a counter) across resume."""

    def __init__(self):
        self.inner, self.count = StandardStep(), 0

    def setup(self, model, config):
        self.inner.setup(model, config)

    def step(self, model, inputs, targets, objective):
        self.count += 1
        return self.inner.step(model, inputs, targets, objective)

    def epoch_end(self, epoch):
        self.inner.epoch_end(epoch)

    @property
    def lr(self):
        return self.inner.lr

    @property
    def extra_metrics(self):
        return {"count": float(self.count)}

    def state_dict(self):
        return {"inner": self.inner.state_dict(), "count": self.count}

    def load_state_dict(self, state):
        self.inner.load_state_dict(state["inner"])
        self.count = state["count"]


def test_custom_strategy_extra_metrics_are_recorded_and_resumed(tmp_path):
    train = make_data(40)  # 3 batches per epoch
    finetune(make_cnn(), train, None, config(epochs=2, max_steps=4), strategy=CountingStep(),
             checkpoint_dir=tmp_path, progress=False)
    strategy = CountingStep()
    result = finetune(make_cnn(), train, None, config(epochs=2), strategy=strategy, checkpoint_dir=tmp_path,
                      resume=True, progress=False)
    assert strategy.count == 6
    assert [r["count"] for r in result.step_records] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in result.step_records] == [1, 2, 3, 4, 5, 6]


def test_progress_display_renders_epochs():
    out = io.StringIO()
    with TrainProgress(2, console=Console(file=out, width=140)) as display:
        display.start_epoch(0, 3, 0)
        display.advance({"loss": 1.0, "acc": 0.5, "lr": 0.01, "meta": 0.25})
        display.end_epoch({"epoch": 0, "train_loss": 0.9, "train_acc": 0.5, "test_acc": 0.75,
                           "test_loss": 0.8, "lr": 0.01, "seconds": 1.5})
    text = out.getvalue()
    assert "epoch 1/2" in text and "test_acc 75.0%" in text and "lr 1.00e-02" in text


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path)
    save_checkpoint(path, {"format": 1, "value": torch.tensor([1.0, 2.0])})

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": 1, "value": torch.tensor([3.0])})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["value"], torch.tensor([1.0, 2.0]))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_damaged_checkpoint_is_a_config_error(tmp_path):
    checkpoint_path(tmp_path).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read checkpoint"):
        load_checkpoint(checkpoint_path(tmp_path))


def test_preserved_modes_sets_a_mode_and_restores_each_module_even_on_error():
    model = make_cnn().train()
    model[1].eval()  # a deliberately frozen BatchNorm inside a training model
    with pytest.raises(RuntimeError, match="inside"):
        with preserved_modes(model, train=False):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("inside")
    assert model.training and not model[1].training and model[3].training
    with preserved_modes(model):  # None: modes are left as they are inside the block
        assert model.training and not model[1].training


def test_labels_beyond_the_outputs_stop_the_loop_before_any_update(tmp_path):
    """A label the model has no output for, in the last batch only (or only in the test split), stops the
    run at its first forward, before its loss: no update, no checkpoint — not after the epochs before that batch."""
    train, test = make_data(40), make_data(16, seed=1)
    train.y[-1] = 3  # the model has 3 outputs: labels 0..2
    model = make_cnn()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    with pytest.raises(DataError) as err:
        finetune(model, train, test, config(), checkpoint_dir=tmp_path, progress=False)
    assert err.value.message == "the train labels go from 0 to 3, but the model outputs 3 class scores (labels 0..2)"
    assert err.value.hint.startswith("give the model's last layer 4 outputs")
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())  # no optimizer step
    assert not checkpoint_path(tmp_path).exists()
    test.y[0], train.y[-1] = -1, 0
    with pytest.raises(DataError, match="the test labels go from -1 to 2") as err:
        finetune(make_cnn(), train, test, config(), progress=False)
    assert err.value.hint == "labels are class indices: 0..2, never negative"
    train.y = train.y + 0.5
    with pytest.raises(DataError, match="the train labels are float64 values, not class indices"):
        finetune(make_cnn(), train, None, config(), progress=False)
