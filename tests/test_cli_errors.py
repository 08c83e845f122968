"""User errors on the command line exit 2 with a cause and a fix, never 1 ("a bug, report the traceback")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli

MODEL_SOURCE = '''
from torch import nn


def build(classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, classes))


def build5():
    return build(5)
'''


def invoke(*args, expect: int) -> dict:
    """Run with --json; the exit code must be ``expect`` and stdout one JSON document."""
    result = CliRunner().invoke(cli, [*map(str, args), "--json"])
    assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("errors") / "net.py"
    path.write_text(MODEL_SOURCE)
    return path


def error_of(document: dict) -> dict:
    assert document["ok"] is False
    return document["error"]


@pytest.mark.parametrize("flag, value", [("--lr", "inf"), ("--lr", "nan"), ("--momentum", "nan"),
                                         ("--weight-decay", "-inf"), ("--gamma", "inf"), ("--kd-alpha", "nan"),
                                         ("--lr", "1e400"), ("--meta-lr", "inf"),
                                         ("--meta-lr", "nan")])
def test_non_finite_float_options_are_refused_naming_the_flag(model_file, tmp_path, flag, value):
    method = ["--method", "metaquant", "--quantizer", "dorefa"] if flag.startswith("--meta") else []
    error = error_of(invoke("compile", f"{model_file}:build", "--input-shape", "1,1,8,8", *method, flag, value,
                            "--out", tmp_path / "m.onnx", "--run-dir", tmp_path / "run", expect=2))
    assert error["type"] == "ConfigError" and error["message"] == f"{flag} must be a finite number, got {value!r}"
    assert error["hint"].startswith("pass a finite number")
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("flags, message", [
    (["--layer-bits", "0=9"], "--layer-bits 0=9: weight bits must be an integer in 1..8, or 0 to keep the layer float"),
    (["--layer-bits", "*=12"], "--layer-bits *=12: weight bits must be an integer in 1..8, or 0 to keep the layer float"),
    (["--w-bits", "9"], "--w-bits must be an integer in 1..8, got 9"),
    (["--w-bits", "0"], "--w-bits must be an integer in 1..8, got 0"),
    (["--a-bits", "1"], "--a-bits must be an integer in 2..8, or none for float activations, got 1"),
    (["--a-bits", "16"], "--a-bits must be an integer in 2..8, or none for float activations, got 16"),
])
def test_bits_out_of_range_are_config_errors(model_file, flags, message):
    error = error_of(invoke("inspect", f"{model_file}:build", "--input-shape", "1,1,8,8", *flags, expect=2))
    assert error["type"] == "ConfigError" and error["message"] == message and error["hint"]


def test_layer_bits_zero_still_keeps_a_layer_float(model_file):
    report = invoke("inspect", f"{model_file}:build", "--input-shape", "1,1,8,8", "--layer-bits", "0=0", expect=0)
    first, last = report["sites"]
    assert (first["name"], first["w_bits"], first["a_bits"], first["reason"]) == ("0", None, None, "override 0=0")
    assert last["w_bits"] == 4 and last["a_bits"] == 8


@pytest.mark.parametrize("shape, message, hint", [
    ("1,3,8,8", "the model cannot run on an input of shape 1,3,8,8: Given groups=1, weight of size [4, 1, 3, 3], "
                "expected input[1, 3, 8, 8] to have 1 channels, but got 3 channels instead",
     "the model's first layer '0' (Conv2d) takes 1 input channels: use --input-shape 1,1,8,8 "
     "(API: input_shape=(1, 1, 8, 8))"),
    ("1,64", None, "the model's first layer '0' (Conv2d) takes 4-D inputs (batch, channels, ...): use --input-shape 1,1,H,W"),
    ("1,1,9,9", None, "give --input-shape the shape the model's forward takes"),
])
def test_an_input_shape_the_model_cannot_take_is_a_config_error(model_file, tmp_path, shape, message, hint):
    for command in (["inspect"], ["compile", "--out", tmp_path / "m.onnx", "--run-dir", tmp_path / "run"]):
        error = error_of(invoke(command[0], f"{model_file}:build", "--input-shape", shape, *command[1:], expect=2))
        assert error["type"] == "ConfigError"
        assert error["message"] == message if message else error["message"].startswith(f"the model cannot run on an input of shape {shape}: ")
        assert error["hint"].startswith(hint)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def five_class_data(tmp_path) -> str:
    """Digits-sized images whose train labels are 0..4 and whose test split also holds a label 5."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(80, 1, 8, 8)).astype(np.float32)
    y_train = np.arange(64) % 5
    y_test = np.array([0, 1, 2, 3, 4, 5] * 2 + [0, 1, 2, 3])
    path = tmp_path / "five.npz"
    np.savez(path, x_train=x[:64], y_train=y_train, x_test=x[64:], y_test=y_test)
    return f"npz:{path}"


def test_labels_the_model_has_no_output_for_stop_compile_before_training(model_file, tmp_path, five_class_data):
    run_dir = tmp_path / "run"
    error = error_of(invoke("compile", f"{model_file}:build5", "--input-shape", "1,1,8,8", "--data", five_class_data,
                            "--out", tmp_path / "m.onnx", "--run-dir", run_dir, expect=2))
    assert error["type"] == "DataError"
    assert error["message"] == "the test labels go from 0 to 5, but the model outputs 5 class scores (labels 0..4)"
    assert error["hint"] == ("give the model's last layer 6 outputs (e.g. nn.Linear(features, 6)), "
                             "or pass data whose labels are 0..4")
    assert not run_dir.exists() and not (tmp_path / "m.onnx").exists()  # nothing trained, nothing written


def summing_onnx(path: Path, axes: list[int], output_shape: list) -> Path:
    """A foreign model (no qcompile metadata) that sums its 1×8×8 input over ``axes``."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_a_foreign_onnx_with_one_dimensional_outputs_is_a_user_error(tmp_path):
    """The classification task refuses outputs that are not (samples, classes) scores: exit 2 with a fix."""
    path = summing_onnx(tmp_path / "sum.onnx", [1, 2, 3], ["batch"])
    error = error_of(invoke("run", path, "--data", "digits", expect=2))
    assert error["message"] == "a classifier's outputs must be (samples, classes) scores for 397 samples, got shape (397,)"
    assert "classification expects one logit per class" in error["hint"]


def test_a_foreign_onnx_whose_output_has_no_batch_dimension_is_a_user_error(tmp_path):
    path = summing_onnx(tmp_path / "total.onnx", [0, 1, 2, 3], [])
    error = error_of(invoke("run", path, "--data", "digits", expect=2))
    assert error["type"] == "OutputError"
    assert error["message"] == (f"{path} returned an output of shape [] for a batch of 256: its first output must "
                                "have one row per sample")
