"""One numpy normalisation for the runtime, datasets, ``qcompile run`` and the parity check — bit for bit
what each computed before it was shared — and one torch path for training batches; and the normalisation a
user chooses: presets, explicit values, validation, and where it is used and recorded."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import qcompile
from qcompile.cli.main import cli
from qcompile.data import ArrayDataset, DatasetSplits
from qcompile.runtime.normalisation import PRESETS, Normalization, NormalizationError, choose, normalise
from qcompile.train import Batches, evaluate

MEAN, STD = (0.13, 0.52, 0.9), (0.31, 0.07, 1.7)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).random((7, 3, 5, 4), dtype=np.float32)


def axis1_formula(x, mean, std):
    """The session's and the parity check's former inline computation."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    return np.ascontiguousarray(out, dtype=np.float32)


def chw_formula(x, mean, std):
    """DatasetSplits.normalize's former computation (NCHW batches and single CHW images)."""
    m, s = np.asarray(mean, np.float32).reshape(-1, 1, 1), np.asarray(std, np.float32).reshape(-1, 1, 1)
    return ((np.asarray(x, np.float32) - m) / s).astype(np.float32, copy=False)


def test_the_shared_function_equals_each_former_formula_bit_for_bit(images):
    out = normalise(images, MEAN, STD)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out, axis1_formula(images, MEAN, STD))
    assert np.array_equal(out, chw_formula(images, MEAN, STD))
    assert np.array_equal(normalise(images[0], MEAN, STD, channel_axis=-3), chw_formula(images[0], MEAN, STD))
    sequence = images.reshape(7, 3, 20)  # (N, C, L): channels on axis 1 whatever the rank
    assert np.array_equal(normalise(sequence, MEAN, STD), axis1_formula(sequence, MEAN, STD))


def test_datasets_and_training_batches_agree(images):
    splits = DatasetSplits("t", ArrayDataset(images, np.zeros(7, np.int64)), ArrayDataset(images, np.zeros(7, np.int64)),
                           ["a"], MEAN, STD)
    assert np.array_equal(splits.normalize(images), normalise(images, MEAN, STD))
    assert np.array_equal(splits.normalize(images[2]), normalise(images, MEAN, STD)[2])
    inputs, _ = next(Batches(splits.train, 7, torch.device("cpu"), MEAN, STD).in_order())
    assert np.array_equal(inputs.numpy(), normalise(images, MEAN, STD))  # the torch path computes the same floats


# ----------------------------------------------------------------------------- the torch-free value object
def test_presets_and_explicit_values():
    cifar = choose("cifar10")
    assert (cifar.mean, cifar.std, cifar.source) == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), "cifar10")
    assert choose("ImageNet").mean == PRESETS["imagenet"][0]
    assert choose("data") is None and choose() is None  # computed from the training split later
    given = choose(mean="0.5, 0.25,0.125", std=(1, 2, 4))
    assert (given.mean, given.std, given.source) == ((0.5, 0.25, 0.125), (1.0, 2.0, 4.0), "given")
    assert choose(mean=0.5, std=0.25).for_channels(3) == Normalization((0.5,) * 3, (0.25,) * 3)
    assert choose("none").for_channels(2).mean == (0.0, 0.0)


def test_apply_is_per_channel_over_axis_1():
    x = np.stack([np.full((2, 2), 0.5, np.float32), np.full((2, 2), 1.0, np.float32)])[None]
    out = Normalization((0.5, 0.0), (0.25, 2.0)).apply(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out[0, 0], np.zeros((2, 2))) and np.array_equal(out[0, 1], np.full((2, 2), 0.5))


@pytest.mark.parametrize("kwargs, message", [
    ({"mean": "nan", "std": "1"}, "mean [nan] has a value that is not finite"),
    ({"mean": "0.5", "std": "inf"}, "std [inf] has a value that is not finite"),
    ({"mean": "0.5", "std": "0"}, "std [0.0] has a value below 1e-06"),
    ({"mean": "0.5", "std": "1e-300"}, "std [1e-300] has a value below 1e-06"),
    ({"mean": "0.5,0.2", "std": "0.1,0.2,0.3"}, "mean has 2 values but std has 3"),
    ({"mean": "0.5"}, "mean was given without std"),
    ({"mean": "a,b", "std": "1"}, "mean 'a,b' is not a comma-separated list of numbers"),
    ({"norm": "cifar10", "mean": "0.5", "std": "1"}, "both a named normalisation and mean/std were given"),
    ({"norm": "cifar100"}, "unknown normalisation 'cifar100'"),
])
def test_bad_values_are_refused_with_a_fix(kwargs, message):
    with pytest.raises(NormalizationError) as info:
        choose(**kwargs)
    assert str(info.value.message) == message and "--norm" in info.value.hint


def test_channel_count_must_match_the_input():
    with pytest.raises(NormalizationError) as info:
        choose("imagenet").for_channels(1)
    assert info.value.message == "mean has 3 values but the model's input has 1 channel(s)"


# ----------------------------------------------------------------------------- the API
class RGBNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1))


def test_api_records_a_preset_in_the_manifest(tmp_path):
    cm = qcompile.compile(RGBNet(), input_shape=(1, 3, 8, 8), w_bits=4, a_bits=None, normalization="cifar10")
    assert cm.normalization == Normalization(*PRESETS["cifar10"], "cifar10")
    spec = cm.manifest().input
    assert (spec.mean, spec.std) == PRESETS["cifar10"]
    with pytest.raises(NormalizationError, match="mean has 3 values but the model's input has 1 channel"):
        qcompile.compile(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), input_shape=(1, 1, 8, 8),
                         normalization="imagenet")


def test_given_values_drive_calibration_training_and_evaluation(tiny_net):
    """mean/std given to compile are the ones evaluate uses (not the data's), and data cannot replace them."""
    cm = qcompile.compile(tiny_net, input_shape=(1, 1, 8, 8), w_bits=4, a_bits=8, data="digits", mean=0.5, std=0.25)
    assert (cm.normalization.mean, cm.normalization.std) == ((0.5,), (0.25,))
    splits = cm.data
    assert not math.isclose(splits.mean[0], 0.5)  # the data's own statistics differ
    expected = evaluate(cm.float_model, splits.test, mean=(0.5,), std=(0.25,))
    assert cm.metrics(model=cm.float_model) == expected
    computed = evaluate(cm.float_model, splits.test, mean=splits.mean, std=splits.std)
    assert expected["loss"] != computed["loss"]  # so the assertion above tells them apart
    with pytest.raises(qcompile.errors.ConfigError, match="already fixed"):
        cm.set_normalization("mnist")


# ----------------------------------------------------------------------------- the command line
MODEL = """
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
"""


@pytest.mark.parametrize("flags, message", [
    (["--mean", "nan", "--std", "1"], "Error: mean [nan] has a value that is not finite"),
    (["--mean", "0.5", "--std", "0"], "Error: std [0.0] has a value below 1e-06"),
    (["--norm", "cifar10"], "Error: mean has 3 values but the model's input has 1 channel(s)"),
    (["--mean", "0.1,0.2", "--std", "0.3,0.4"], "Error: mean has 2 values but the model's input has 1 channel(s)"),
    (["--norm", "mnist", "--mean", "0.1", "--std", "0.3"], "Error: both a named normalisation and mean/std"),
])
def test_compile_refuses_bad_normalisation_before_writing_anything(tmp_path, flags, message):
    (tmp_path / "m.py").write_text(MODEL)
    out, run_dir = tmp_path / "m.onnx", tmp_path / "run"
    result = CliRunner().invoke(cli, ["compile", f"{tmp_path / 'm.py'}:build", "--input-shape", "1,1,8,8", *flags,
                                      "--out", str(out), "--run-dir", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "How to fix:" in result.stderr
    assert not out.exists() and not run_dir.exists()


def test_compile_records_given_normalisation_in_artifact_and_run_dir(tmp_path):
    (tmp_path / "m.py").write_text(MODEL)
    out, run_dir = tmp_path / "m.onnx", tmp_path / "run"
    result = CliRunner().invoke(cli, ["compile", f"{tmp_path / 'm.py'}:build", "--input-shape", "1,1,8,8",
                                      "--norm", "mnist", "--epochs", "0", "--out", str(out), "--run-dir", str(run_dir),
                                      "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["normalization"] == {"mean": [0.1307], "std": [0.3081], "source": "mnist"}
    from qcompile.runtime import Session

    art = Session(out).artifact
    assert (art.mean, art.std, art.classes) == ((0.1307,), (0.3081,), tuple(str(i) for i in range(10)))
    from qcompile.run_dir import load_run

    assert load_run(run_dir).normalization == Normalization((0.1307,), (0.3081,), "mnist")
