"""Non-finite options are refused, and a run whose loss or weights stop being finite stops with the
last good checkpoint kept (never overwritten by a NaN model)."""

from __future__ import annotations

import math

import pytest
import torch

from qcompile.errors import ConfigError, TrainingDiverged
from qcompile.methods.metaquant.options import MetaQuantOptions
from qcompile.train import StandardStep, TrainConfig, checkpoint_path, finetune, load_checkpoint
from test_train import config, make_cnn, make_data

NON_FINITE = [math.inf, -math.inf, math.nan]
FLOAT_FIELDS = ["lr", "momentum", "weight_decay", "gamma", "kd_alpha", "kd_temperature"]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_every_float_training_option_must_be_finite(field, value):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**{field: value})
    assert err.value.message.startswith(f"{field} must be a ") and err.value.message.endswith(f", got {value!r}")


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_normalisation_and_method_options_must_be_finite(value):
    with pytest.raises(ConfigError, match="mean and std must be finite numbers"):
        TrainConfig(mean=(0.5, value), std=(0.2, 0.2))
    with pytest.raises(ConfigError, match="mean and std must be finite numbers"):
        TrainConfig(mean=(0.5,), std=(value,))
    with pytest.raises(ConfigError, match="meta_lr"):
        MetaQuantOptions(meta_lr=value)


class PoisonedStep(StandardStep):
    """A standard step that, from step ``at`` on, makes the loss or the weights non-finite."""

    def __init__(self, at: int, what: str):
        super().__init__()
        self.at, self.what, self.calls = at, what, 0

    def step(self, model, inputs, targets, objective):
        self.calls += 1
        out = super().step(model, inputs, targets, objective)
        if self.calls < self.at:
            return out
        if self.what == "weights":
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)
            return out
        return type(out)(math.nan, out.outputs)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    train = make_data(40)  # 3 batches per epoch
    cfg = config(epochs=3, checkpoint_every=2)
    with pytest.raises(TrainingDiverged) as err:
        finetune(make_cnn(), train, None, cfg, strategy=PoisonedStep(at=5, what="loss"),
                 checkpoint_dir=tmp_path, progress=False)
    e = err.value
    assert e.message.startswith("the training loss became nan at epoch 2, step 2 of 3 (step 5 of the run)")
    assert "learning rate too high for sgd (lr=0.05)" in e.message
    assert "--lr 0.005" in e.hint and f"the last good checkpoint, {checkpoint_path(tmp_path)}, was kept" in e.hint
    saved = load_checkpoint(checkpoint_path(tmp_path))
    assert saved["global_step"] == 4  # the checkpoint of step 4, not a NaN model of step 5
    assert all(bool(torch.isfinite(t).all()) for t in saved["model"].values() if t.is_floating_point())


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    """Weights poisoned by step 3 (the loss of that step was still finite): the end-of-epoch checkpoint
    refuses them, and the checkpoint of step 2 stays."""
    train = make_data(40)
    with pytest.raises(TrainingDiverged, match=r"the weights became non-finite \('0.weight'\) at the checkpoint "
                                               r"after step 3 of the run"):
        finetune(make_cnn(), train, None, config(epochs=3, checkpoint_every=2),
                 strategy=PoisonedStep(at=3, what="weights"), checkpoint_dir=tmp_path, progress=False)
    assert load_checkpoint(checkpoint_path(tmp_path))["global_step"] == 2


def test_a_run_without_checkpoints_says_nothing_was_saved():
    with pytest.raises(TrainingDiverged) as err:
        finetune(make_cnn(), make_data(40), None, config(), strategy=PoisonedStep(at=1, what="loss"), progress=False)
    assert "step 1 of 3 (step 1 of the run)" in err.value.message and err.value.hint.endswith("nothing was saved")


def test_an_absurd_learning_rate_diverges_with_a_clear_error():
    """No poisoning: lr=1e30 on a float model really overflows within a few steps."""
    with pytest.raises(TrainingDiverged, match="lr=1e\\+30"):
        finetune(make_cnn(), make_data(40), None, config(lr=1e30, momentum=0.0), progress=False)
