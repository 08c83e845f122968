"""Leaf modules with control flow: a value-dependent ``if`` is refused before training, naming the module and line,
in a short message without terminal codes; the same branch written with ``torch.cond`` compiles and exports exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from qcompile.cli.main import cli

MODEL = '''
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class CondGate(nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t.clone(), lambda t: -t, (x,))


class Net(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.gate = gate
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.gate(torch.relu(self.conv1(x)) - 0.1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build_if():
    return Net(Gate())


def build_cond():
    return Net(CondGate())
'''


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("leaf") / "gated.py"
    path.write_text(MODEL)
    return path


def compile_gated(model_file: Path, factory: str, tmp_path: Path, *extra: str):
    args = ["compile", f"{model_file}:{factory}", "--leaf", "gate", "--input-shape", "1,1,8,8", "--data", "digits",
            "--out", str(tmp_path / "g.onnx"), "--run-dir", str(tmp_path / "run"), *extra]
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("epochs", ["1", "0"])
def test_a_value_dependent_leaf_is_refused_before_training_with_module_and_line(model_file, tmp_path, epochs):
    result = compile_gated(model_file, "build_if", tmp_path, "--epochs", epochs)
    assert result.exit_code == 2, result.output
    error = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "How to fix:"))]
    assert error[0] == f"Error: cannot export module 'gate' (Gate) to ONNX: data-dependent control flow at " \
                       f"{model_file}:{MODEL.splitlines().index('        if x.sum() > 0:') + 1}: `if x.sum() > 0:`"
    assert error[1].startswith("How to fix: torch.export cannot follow a Python `if` on tensor values: write the branch "
                               "with torch.cond(pred, true_fn, false_fn, (x,))")
    assert "\x1b" not in result.output and len(result.stderr.splitlines()) <= 6
    assert "finetuning" not in result.stderr  # refused before training
    assert not (tmp_path / "g.onnx").exists() and not (tmp_path / "run").exists()


def test_debug_shows_the_exporters_log(model_file, tmp_path):
    result = CliRunner().invoke(cli, ["--debug", "compile", f"{model_file}:build_if", "--leaf", "gate", "--input-shape",
                                      "1,1,8,8", "--a-bits", "none", "--epochs", "0", "--out", str(tmp_path / "g.onnx")])
    assert result.exit_code == 2 and "GuardOnDataDependentSymNode" in result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("Error:"))
    assert error.startswith("Error: cannot export module 'gate' (Gate)") and "\x1b" not in error


def test_the_same_branch_with_torch_cond_compiles_and_matches_in_onnxruntime(model_file, tmp_path):
    result = compile_gated(model_file, "build_cond", tmp_path, "--epochs", "1", "--max-steps", "3", "--json")
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0 and parity["acc_ort"] == parity["acc_torch"]


def test_the_trace_hint_warns_that_a_leaf_must_export(model_file, tmp_path):
    result = CliRunner().invoke(cli, ["compile", f"{model_file}:build_if", "--input-shape", "1,1,8,8",
                                      "--out", str(tmp_path / "g.onnx")])
    assert result.exit_code == 2
    assert "How to fix: mark it as a leaf module: --leaf gate" in result.stderr and "use torch.cond" in result.stderr
