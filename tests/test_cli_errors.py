"""User errors on the command line exit 2 with a cause and a fix, never 1 ("a bug, report the traceback")."""

from __future__ import annotations

import json
from pathlib import Path

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
