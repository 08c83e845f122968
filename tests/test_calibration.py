"""Calibrate-only (--epochs 0) exports of BatchNorm networks: statistics re-estimated for the quantized
weights when there is data, a visible warning when nothing recomputed them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import qcompile
from qcompile.cli.main import cli
from qcompile.data import load_dataset
from qcompile.errors import QCompileWarning
from qcompile.runtime import Session
from qcompile.train import TrainConfig, finetune

W1_DOREFA = dict(input_shape=(1, 1, 8, 8), quantizer="dorefa", w_bits=1)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def float_cnn(digits):
    """The demo's BN CNN trained in float on digits (99.5% test accuracy after 4 epochs)."""
    from qcompile.demo import build_cnn

    torch.manual_seed(0)
    model = build_cnn()
    finetune(model, digits.train, None, TrainConfig(epochs=4, lr=3e-3, optimizer="adam", batch_size=32, device="cpu",
                                                    mean=digits.mean, std=digits.std), progress=False)
    return model.eval()


def export_and_score(cm, path, digits) -> tuple[float, float, list]:
    """(ORT accuracy, largest |logit|, warnings raised by the export)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cm.export(path)
    logits = Session(path).predict(digits.test.x, normalize=True)
    return (float((logits.argmax(1) == digits.test.y).mean()), float(np.abs(logits).max()),
            [w.message for w in caught if issubclass(w.category, QCompileWarning)])


@pytest.mark.parametrize("a_bits", [None, 8])
def test_a_calibrate_only_w1_dorefa_export_is_sane(float_cnn, digits, tmp_path, a_bits):
    cm = qcompile.compile(float_cnn, a_bits=a_bits, data=digits, **W1_DOREFA)
    accuracy, largest, caught = export_and_score(cm, tmp_path / "w1.onnx", digits)
    assert largest < 100 and accuracy > 0.6 and not caught  # chance is 0.1
    assert accuracy == pytest.approx(cm.evaluate())  # ORT agrees with PyTorch


def test_without_re_estimation_the_same_export_is_broken_and_warned_about(float_cnn, digits, tmp_path):
    cm = qcompile.compile(float_cnn, a_bits=None, data=digits, bn_reestimate_batches=0, **W1_DOREFA)
    accuracy, largest, caught = export_and_score(cm, tmp_path / "w1.onnx", digits)
    assert largest > 1000 and accuracy < 0.5  # what re-estimation fixes
    assert [w.message for w in caught] == ["the BatchNorm statistics are those of the float weights: nothing recomputed "
                                           "them for the quantized weights, so the exported model may output huge or "
                                           "meaningless values (1-bit weights above all)"]
    assert "calibrate on data before exporting" in caught[0].hint


def test_no_data_means_a_warning_at_export(float_cnn, tmp_path):
    cm = qcompile.compile(float_cnn, a_bits=None, **W1_DOREFA)  # weight-only: exports without any data
    with pytest.warns(QCompileWarning, match="BatchNorm statistics are those of the float weights"):
        cm.export(tmp_path / "w1.onnx")
    cm.calibrate("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("error", QCompileWarning)
        cm.export(tmp_path / "w1.onnx")  # re-estimated now: no warning


def test_the_command_line_shows_the_warning_and_lists_it_under_json(float_cnn, tmp_path):
    weights = tmp_path / "cnn.pt"
    torch.save(float_cnn.state_dict(), weights)
    base = ["compile", "qcompile.demo:build_cnn", "--weights", str(weights), "--input-shape", "1,1,8,8",
            "--quantizer", "dorefa", "--w-bits", "1", "--a-bits", "none", "--epochs", "0"]
    quiet = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a.onnx"), "--run-dir", str(tmp_path / "a")])
    assert quiet.exit_code == 0 and "Warning:" not in quiet.stderr
    loud = CliRunner().invoke(cli, [*base, "--bn-reestimate", "0", "--out", str(tmp_path / "b.onnx"),
                                    "--run-dir", str(tmp_path / "b"), "--json"])
    assert loud.exit_code == 0
    assert "Warning: the BatchNorm statistics are those of the float weights" in loud.stderr
    assert "How to fix: calibrate on data before exporting" in loud.stderr
    document = json.loads(loud.stdout)
    assert [w["message"][:47] for w in document["warnings"]] == ["the BatchNorm statistics are those of the float"]
    assert document["accuracy"]["quantized_torch"] < 0.5 < json.loads(
        CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "c.onnx"), "--run-dir", str(tmp_path / "c"),
                                 "--json"]).stdout)["accuracy"]["quantized_torch"]


def test_calibrating_again_after_training_keeps_frozen_ranges(float_cnn, digits):
    cm = qcompile.compile(float_cnn, a_bits=8, data=digits, **W1_DOREFA)
    cm.finetune(epochs=1, max_steps=3, batch_size=32, progress=False)
    for q in cm.activation_quantizers():
        q.freeze()
    ranges = [(float(q.running_min), float(q.running_max)) for q in cm.activation_quantizers()]
    cm.calibrate(digits)
    assert [(float(q.running_min), float(q.running_max)) for q in cm.activation_quantizers()] == ranges
    assert all(bool(q.calibrated) for q in cm.activation_quantizers())
    assert cm.evaluate() > 0.1
