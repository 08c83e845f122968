"""``CompiledModel.finetune``: a ``config`` and keyword options combine (options win, validated as a whole)."""

from __future__ import annotations

import pytest
import torch

import qcompile
from qcompile.errors import ConfigError
from qcompile.train import TrainConfig, checkpoint_path, load_checkpoint

from conftest import TinyBNNet


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    return qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), w_bits=4, a_bits=8, data="digits")


def saved_config(directory) -> dict:
    return load_checkpoint(checkpoint_path(directory))["config"]


def test_options_override_the_config_fields_they_name(compiled, tmp_path):
    base = TrainConfig(epochs=3, lr=0.5, optimizer="adam", batch_size=32, max_steps=1)
    result = compiled.finetune(config=base, lr=1e-3, max_steps=2, checkpoint_dir=tmp_path, progress=False)
    config = saved_config(tmp_path)
    assert result.steps == 2 and (config["lr"], config["max_steps"]) == (1e-3, 2)  # the options'
    assert (config["epochs"], config["optimizer"], config["batch_size"]) == (3, "adam", 32)  # the config's
    assert tuple(config["mean"]) == pytest.approx(compiled.data.mean)  # unset in both: the data's statistics


def test_a_config_alone_and_options_alone_still_work(compiled, tmp_path):
    compiled.finetune(config=TrainConfig(epochs=1, lr=0.02, max_steps=1), checkpoint_dir=tmp_path / "a", progress=False)
    assert saved_config(tmp_path / "a")["lr"] == 0.02
    compiled.finetune(epochs=1, lr=0.03, max_steps=1, checkpoint_dir=tmp_path / "b", progress=False)
    assert saved_config(tmp_path / "b")["lr"] == 0.03


def test_bad_or_unknown_options_with_a_config_are_config_errors(compiled):
    with pytest.raises(ConfigError) as err:
        compiled.finetune(config=TrainConfig(), lrate=1e-3, progress=False)
    assert err.value.message == "unknown training option(s): lrate" and "lr, max_steps" in err.value.hint
    with pytest.raises(ConfigError, match="lr must be a finite positive number, got inf"):
        compiled.finetune(config=TrainConfig(), lr=float("inf"), progress=False)
