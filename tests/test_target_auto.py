"""``--target auto``, compile's default: which target it picks, why, and what the run and the file record.

``auto`` picks ``ort-int8`` for an STE uniform W2..8A8 model on an x86 CPU and ``exact`` otherwise, naming
the first rule that failed (``qcompile.targets``). The plan, the run directory and the artifact store the
target picked, never ``auto``.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import TinyBNNet, digits_cnn_file
from qcompile.api import compile as qcompile_compile
from qcompile.cli.main import cli
from qcompile.errors import ConfigError, IntegerKernelError
from qcompile.plan import QuantSpec
from qcompile.runtime.artifact import Artifact
from qcompile.targets import integer_kernel_obstacle, resolve_target


@pytest.mark.parametrize("fields, machine, target, reason", [
    ({}, "x86_64", "ort-int8", "auto: STE uniform W4A8 on x86-64 → ort-int8"),
    ({}, "AMD64", "ort-int8", "STE uniform W4A8"),
    ({"w_bits": 2, "overrides": {"conv1": 8}}, "x86_64", "ort-int8", "STE uniform W2/8A8"),
    ({"overrides": {"fc": 0}}, "x86_64", "ort-int8", "W4A8"),  # a layer kept float has no weights to run
    ({"a_bits": 4}, "x86_64", "exact", "activations are 4-bit; ort-int8 needs --a-bits 8"),
    ({"a_bits": None}, "x86_64", "exact", "weights-only model: no activation quantizers"),
    ({"quantizer": "bwn", "w_bits": 1}, "x86_64", "exact", "--quantizer bwn"),
    ({"quantizer": "dorefa"}, "x86_64", "exact", "--quantizer dorefa"),
    ({"quantizer": "uniform-asym"}, "x86_64", "exact", "--quantizer uniform-asym"),
    ({"w_bits": 1}, "x86_64", "exact", "1-bit weights; ort-int8 needs 2..8 bits"),
    ({"overrides": {"conv*": 1}}, "x86_64", "exact", "--layer-bits conv*=1"),
    ({"method": "metaquant"}, "x86_64", "exact", "--method metaquant"),
    ({"method": "universal"}, "x86_64", "exact", "--method universal"),
    ({"method": "dynadfq"}, "x86_64", "exact", "--method dynadfq"),
    ({}, "arm64", "exact", "arm64 CPU"),
    ({}, "aarch64", "exact", "aarch64 CPU"),
])
def test_resolve_target_names_the_first_rule_that_fails(fields, machine, target, reason):
    spec = QuantSpec(**{"w_bits": 4, "a_bits": 8, "target": "auto", **fields})
    got, why = resolve_target(spec, machine=machine)
    assert got == target and reason in why and why.endswith(f"→ {target}")


def test_explicit_targets_are_kept_and_ort_int8_checks_the_same_rules():
    assert resolve_target(QuantSpec(a_bits=4, target="exact"), machine="arm64")[0] == "exact"
    assert resolve_target(QuantSpec(target="ort-int8"), machine="arm64")[0] == "ort-int8"  # warned at load instead
    spec = QuantSpec(a_bits=4, target="ort-int8")
    obstacle = integer_kernel_obstacle(spec)
    with pytest.raises(ConfigError, match="8-bit activations") as raised:
        spec.validate()
    assert raised.value.message == obstacle.message and raised.value.hint == obstacle.hint


def test_api_default_is_auto_and_the_plan_holds_the_pick(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    w4a8 = qcompile_compile(TinyBNNet(), input_shape=(1, 1, 8, 8))
    w4a4 = qcompile_compile(TinyBNNet(), input_shape=(1, 1, 8, 8), a_bits=4)
    assert (w4a8.plan.spec.target, w4a4.plan.spec.target) == ("ort-int8", "exact")
    assert w4a4.plan.target_reason == "auto: activations are 4-bit; ort-int8 needs --a-bits 8 → exact"
    report = w4a8.inspect()
    assert report["target"] == "ort-int8" and "x86-64" in report["target_reason"]
    with pytest.raises(ConfigError, match="8-bit activations"):  # asked for explicitly, an ineligible model fails
        qcompile_compile(TinyBNNet(), input_shape=(1, 1, 8, 8), a_bits=4, target="ort-int8")


def _failing_integer_pass(monkeypatch):
    from qcompile.passes.integer_kernels import IntegerKernels

    def fail(self, gm):
        raise IntegerKernelError("unsupported pattern: a residual add of three tensors",
                                 hint="compile with --target exact")

    monkeypatch.setattr(IntegerKernels, "run", fail)


def test_auto_falls_back_to_exact_when_the_integer_pass_fails(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    _failing_integer_pass(monkeypatch)
    cm = qcompile_compile(TinyBNNet(), input_shape=(1, 1, 8, 8))
    assert cm.plan.spec.target == "exact"
    assert cm.plan.target_reason.startswith("auto: ort-int8 failed on this graph (unsupported pattern")
    assert not any(r.get("pass") == "IntegerKernels" for r in cm.reports)
    with pytest.raises(ConfigError, match="unsupported pattern"):
        qcompile_compile(TinyBNNet(), input_shape=(1, 1, 8, 8), target="ort-int8")


def test_auto_raises_other_errors_at_once_without_an_exact_rebuild():
    """Only the integer-kernel pass's refusal falls back; a bad option fails on the first build."""
    from qcompile.targets import build_for_target

    builds = []

    def build(spec):
        builds.append(spec.target)
        raise ConfigError("--layer-bits pattern(s) ['nope'] match no layer")

    with pytest.raises(ConfigError, match="match no layer") as raised:
        build_for_target(QuantSpec(w_bits=4, a_bits=8, target="auto"), build, machine="x86_64")
    assert builds == ["ort-int8"] and raised.value.__context__ is None


@pytest.fixture
def model_file(tmp_path):
    return digits_cnn_file(tmp_path)


def _compile(model_file, tmp_path, *extra):
    model, weights = model_file
    out, run = tmp_path / "m.onnx", tmp_path / "run"
    args = ["compile", f"{model}:build", "--weights", weights, "--input-shape", "1,1,8,8", "--epochs", "0",
            "--bn-reestimate", "4", "--out", out, "--run-dir", run, "--json", *extra]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out, run


def test_cli_compile_default_picks_ort_int8_and_export_of_the_run_keeps_it(model_file, tmp_path, monkeypatch):
    """No --target: a W4A8 STE model on x86 becomes ort-int8; the file says so and ORT equals PyTorch;
    the run directory stores ort-int8 (not auto), and ``export RUN_DIR`` writes the same bytes."""
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    summary, out, run = _compile(model_file, tmp_path)
    assert summary["target"] == "ort-int8" and summary["spec"]["target"] == "ort-int8"
    assert summary["target_reason"] == "auto: STE uniform W4A8 on x86-64 → ort-int8"
    assert summary["parity"]["max_abs_diff"] <= 1e-4 and summary["parity"]["agreement"] == 1.0
    assert Artifact.load(out).manifest.extra["target"] == "ort-int8"
    plan = json.loads((run / "plan.json").read_text())
    assert plan["spec"]["target"] == "ort-int8" and plan["target_reason"] == summary["target_reason"]
    again = tmp_path / "again.onnx"
    exported = CliRunner().invoke(cli, ["export", str(run), "--out", str(again), "--target", "ort-int8", "--json"])
    assert exported.exit_code == 0, exported.output
    assert again.read_bytes() == out.read_bytes()
    assert json.loads(exported.stdout)["target_reason"] == summary["target_reason"]  # the run's, not "requested"


def test_cli_compile_json_says_why_a_model_stays_exact(model_file, tmp_path, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    summary, out, _ = _compile(model_file, tmp_path, "--a-bits", "4")
    assert summary["target"] == "exact"
    assert summary["target_reason"] == "auto: activations are 4-bit; ort-int8 needs --a-bits 8 → exact"
    assert "target" not in Artifact.load(out).manifest.extra


def test_cli_explicit_ort_int8_on_an_ineligible_model_exits_2(model_file, tmp_path):
    model, weights = model_file
    result = CliRunner().invoke(cli, ["compile", f"{model}:build", "--weights", str(weights), "--input-shape",
                                      "1,1,8,8", "--a-bits", "4", "--target", "ort-int8", "--epochs", "0",
                                      "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "8-bit activations" in result.output


def test_a_run_saved_without_a_target_reloads_as_exact(model_file, tmp_path, monkeypatch):
    """Runs written before targets existed have no ``target`` in their spec: they are exact runs."""
    from qcompile.run_dir import QMODEL, load_run

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    _, out, run = _compile(model_file, tmp_path, "--target", "exact")
    payload = torch.load(run / QMODEL, weights_only=True)
    spec = json.loads(payload["spec"])
    del spec["target"], payload["target_reason"]
    payload["spec"] = json.dumps(spec)
    torch.save(payload, run / QMODEL)
    cm = load_run(run)
    assert cm.plan.spec.target == "exact" and cm.plan.target_reason == "the run was compiled for exact"
    cm.export(tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == out.read_bytes()
