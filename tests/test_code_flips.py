"""The loop's code flip rate and its frozen-codes guard, on hand-made examples."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from qcompile.quantized_ops import quantize_module
from qcompile.quantizers import BWNQuantizer, DoReFaQuantizer
from qcompile.train import StepOutput, StepStrategy, TrainConfig, finetune
from qcompile.train.code_flips import (FROZEN_FLIP_RATE, GENERIC_CAUSE, HIGH_LOSS_FRACTION, FrozenCodesWarning,
                                       code_flip_rate, code_snapshot, frozen_codes_warning)
from qcompile.train.progress import TrainProgress

W0 = [[0.5, -0.25, 0.1, -0.3], [0.2, 0.4, -0.6, 0.05]]


def bwn_layer(weights=W0) -> nn.Module:
    layer = quantize_module(nn.Linear(4, 2, bias=False), BWNQuantizer())
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights))
    return nn.Sequential(layer)


def set_weights(model: nn.Module, weights) -> None:
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(weights))


def test_flip_rate_counts_changed_codes_on_a_hand_example():
    model = bwn_layer()
    before = code_snapshot(model)
    assert list(before) == ["0"] and before["0"].dtype == torch.int16
    assert before["0"].tolist() == [[1, 0, 1, 0], [1, 1, 0, 1]]  # BWN codes: 1 for W ≥ 0
    # two signs change (−0.25 → 0.25, 0.05 → −0.05); magnitudes alone (0.5 → 0.9) change no code
    set_weights(model, [[0.9, 0.25, 0.1, -0.3], [0.2, 0.4, -0.6, -0.05]])
    assert code_flip_rate(before, code_snapshot(model)) == 2 / 8
    assert code_flip_rate(before, before) == 0.0


def test_flip_rate_of_multi_bit_codes_counts_any_level_change():
    layer = quantize_module(nn.Linear(4, 1, bias=False), DoReFaQuantizer(2))  # codes 0..3
    model = nn.Sequential(layer)
    set_weights(model, [[1.0, 0.3, -0.3, -1.0]])
    before = code_snapshot(model)
    assert before["0"].tolist() == [[3, 2, 1, 0]]
    set_weights(model, [[1.0, -0.01, -0.25, -1.0]])  # 0.3 → −0.01 moves one weight from level 2 to 1; −0.25 stays
    after = code_snapshot(model)
    assert after["0"].tolist() == [[3, 1, 1, 0]]
    assert code_flip_rate(before, after) == 1 / 4


def test_flip_rate_needs_snapshots_of_the_same_layers():
    assert code_snapshot(nn.Sequential(nn.Linear(4, 2))) == {}
    assert code_flip_rate({}, {}) is None
    with pytest.raises(ValueError, match="snapshots of different layers"):
        code_flip_rate(code_snapshot(bwn_layer()), {})


class FlipStep(StepStrategy):
    """Flips the sign of weight ``plan[i]`` (flat index) at step i; None leaves the weights alone."""

    def __init__(self, plan):
        self.plan, self.count = plan, 0

    def setup(self, model, config):
        pass

    def step(self, model, inputs, targets, objective):
        with torch.no_grad():
            index = self.plan[self.count]
            if index is not None:
                model[0].weight.view(-1)[index] *= -1
            outputs = model(inputs)
        self.count += 1
        return StepOutput(float(objective(outputs, targets, inputs)), outputs)

    @property
    def lr(self):
        return 0.0

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def data(n: int = 12) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    return SimpleNamespace(x=rng.standard_normal((n, 4)).astype(np.float32), y=rng.integers(0, 2, n))


# epoch 1 flips weights 0, 1, 2; epoch 2 flips weight 3 and back (net: nothing); epoch 3 flips weight 7
PLAN = [0, 1, 2, 3, 3, None, 7, None, None]


def test_the_loop_records_each_epochs_net_flips_and_warns_on_frozen_codes():
    with pytest.warns(FrozenCodesWarning) as caught:
        result = finetune(bwn_layer(), data(), None, TrainConfig(epochs=3, batch_size=4, device="cpu"),
                          strategy=FlipStep(PLAN), progress=False)
    assert [r["code_flip_rate"] for r in result.history] == [3 / 8, 0.0, 1 / 8]
    flagged = [r for r in result.history if "warning" in r]
    assert [r["epoch"] for r in flagged] == [1]  # a frozen epoch; its loss is not below half the first one's
    (warning,) = [w.message for w in caught if issubclass(w.category, FrozenCodesWarning)]
    cause, fix = GENERIC_CAUSE
    assert warning.message == (f"weight codes frozen: 0% of them changed in epoch 2 (threshold 0.01%) while the "
                               f"train loss {result.history[1]['train_loss']:.4g} is still "
                               f"{100 * result.history[1]['train_loss'] / result.history[0]['train_loss']:.0f}% of "
                               f"the first epoch's {result.history[0]['train_loss']:.4g}. Likely cause: {cause}")
    assert warning.hint == fix
    assert flagged[0]["warning"] == f"{warning.message}\nHow to fix: {fix}"
    assert result.warnings == [f"epoch 2: {flagged[0]['warning']}"]


@pytest.mark.filterwarnings("ignore::qcompile.train.code_flips.FrozenCodesWarning")
def test_a_resumed_epoch_compares_with_its_true_start(tmp_path):
    config = TrainConfig(epochs=3, batch_size=4, device="cpu")
    reference = finetune(bwn_layer(), data(), None, config, strategy=FlipStep(PLAN), progress=False)
    finetune(bwn_layer(), data(), None, TrainConfig(epochs=3, batch_size=4, device="cpu", max_steps=2),
             strategy=FlipStep(PLAN), checkpoint_dir=tmp_path, progress=False)
    model = bwn_layer()
    resumed = finetune(model, data(), None, config, strategy=FlipStep(PLAN), checkpoint_dir=tmp_path, resume=True,
                       progress=False)
    assert [r["code_flip_rate"] for r in resumed.history] == [r["code_flip_rate"] for r in reference.history]


def test_a_float_model_has_no_code_flip_rate():
    rng = np.random.default_rng(0)
    train = SimpleNamespace(x=rng.standard_normal((8, 4)).astype(np.float32), y=rng.integers(0, 2, 8))
    result = finetune(nn.Sequential(nn.Linear(4, 2)), train, None, TrainConfig(epochs=1, batch_size=4, device="cpu"),
                      progress=False)
    assert "code_flip_rate" not in result.history[0] and result.warnings == []


@pytest.mark.parametrize("rate, loss, fires", [
    (0.0, 1.0, True),                                    # nothing changed, loss where it started
    (FROZEN_FLIP_RATE * 0.99, HIGH_LOSS_FRACTION * 2, True),
    (FROZEN_FLIP_RATE, 2.0, False),                      # at the threshold codes still count as moving
    (0.0, HIGH_LOSS_FRACTION * 2 * 0.99, False),         # the loss has more than halved: converged, not stuck
])
def test_the_guard_needs_frozen_codes_and_a_high_loss(rate, loss, fires):
    first = {"epoch": 0, "train_loss": 2.0, "code_flip_rate": 0.3}
    record = {"epoch": 4, "train_loss": loss, "code_flip_rate": rate}
    warning = frozen_codes_warning(record, first, ("a named cause", "a named fix"))
    assert (warning is not None) == fires
    if fires:
        assert "in epoch 5" in warning.message and warning.message.endswith("Likely cause: a named cause")
        assert warning.hint == "a named fix"
    assert frozen_codes_warning({"epoch": 0, "train_loss": 2.0}, first, None) is None  # no quantized weights


def test_progress_shows_the_rate_as_a_percentage_and_the_warning():
    out = io.StringIO()
    with TrainProgress(1, console=Console(file=out, width=200)) as display:
        display.start_epoch(0, 1, 0)
        display.end_epoch({"epoch": 0, "train_loss": 0.5, "code_flip_rate": 0.000123, "warning": "ignored here",
                           "lr": 0.01, "seconds": 1.0})
        display.warn("weight codes frozen: [x]")
    text = out.getvalue()
    assert "code_flip_rate 0.0123%" in text and "ignored here" not in text
    assert "warning: weight codes frozen: [x]" in text
