"""The ``qcompile`` command line, driven through click's CliRunner with a tiny CNN on 8×8 digits.

One compile (1 epoch capped at a few steps) is shared by the run / bench / finetune / export tests;
``--json`` output is parsed everywhere, which also proves stdout carries nothing but the document.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from qcompile.cli.main import cli

COMMANDS = ["demo", "inspect", "compile", "finetune", "export", "run", "bench"]

MODEL_SOURCE = '''
import torch
from torch import nn


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return x
        return -x


class Net(nn.Module):
    def __init__(self, gated=False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.gate = Gate() if gated else nn.Identity()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.gate(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build():
    return Net()


def build_gated():
    return Net(gated=True)
'''


def invoke(*args: str, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def invoke_json(*args: str, expect: int = 0) -> dict:
    result = invoke(*args, "--json", expect=expect)
    return json.loads(result.stdout)  # fails unless stdout is exactly one JSON document


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Commands run in-process; on a shared 2-core box two OpenMP threads per process thrash (see demo.py)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "net.py").write_text(MODEL_SOURCE)
    return root


@pytest.fixture(scope="module")
def model_spec(workdir) -> str:
    return f"{workdir / 'net.py'}:build"


@pytest.fixture(scope="module")
def weights(workdir) -> Path:
    sys.path.insert(0, str(workdir))
    try:
        import net  # the fixture's model file
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    path = workdir / "w.pt"
    torch.save(net.build().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def compiled(workdir, model_spec, weights) -> dict:
    """One W4A8 compile shared by the chain tests: its JSON summary plus the paths it wrote."""
    out, fp32, run_dir = workdir / "m.onnx", workdir / "fp32.onnx", workdir / "run"
    summary = invoke_json("compile", model_spec, "--weights", weights, "--input-shape", "1,1,8,8",
                          "--w-bits", "4", "--a-bits", "8", "--data", "digits", "--epochs", "1", "--max-steps", "6",
                          "--batch-size", "32", "--optimizer", "adam", "--lr", "1e-3", "--kd-alpha", "0.5",
                          "--out", out, "--float-out", fp32, "--run-dir", run_dir)
    return {"summary": summary, "out": out, "fp32": fp32, "run_dir": run_dir}


# ----------------------------------------------------------------------------- help, version
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_mentioning_json(command):
    result = invoke(command, "--help")
    assert "Usage: " in result.stdout and "--json" in result.stdout


def test_top_level_help_and_version():
    assert all(c in invoke("--help").stdout for c in COMMANDS)
    assert "0." in invoke("--version").stdout


# ----------------------------------------------------------------------------- inspect
def test_inspect_json_lists_sites_bits_and_macs(model_spec, weights):
    report = invoke_json("inspect", model_spec, "--weights", weights, "--input-shape", "1,1,8,8",
                         "--w-bits", "2", "--last-layer", "8bit")
    sites = {s["name"]: s for s in report["sites"]}
    assert list(sites) == ["conv1", "conv2", "fc"]
    assert sites["conv1"]["macs"] == 8 * 8 * 8 * 9  # 8 channels × 8×8 outputs × 1·3·3 weights each
    assert sites["conv2"]["macs"] == 16 * 4 * 4 * 8 * 9
    assert sites["fc"]["macs"] == 160 and sites["fc"]["params"] == 170
    assert [sites[n]["w_bits"] for n in sites] == [2, 2, 8] and sites["fc"]["a_bits"] == 8
    assert report["total_macs"] == sum(s["macs"] for s in report["sites"])
    assert {f["op"] for f in report["float_ops"]} >= {"BatchNorm2d"}


def test_inspect_table_shows_sites_and_float_ops(model_spec):
    out = invoke("inspect", model_spec, "--input-shape", "1,1,8,8", "--layer-bits", "fc=0").stdout
    assert "conv2" in out and "Left in float" in out and "BatchNorm2d" in out and "override fc=0" in out


# ----------------------------------------------------------------------------- errors
def test_untraceable_model_names_module_and_line_and_writes_nothing(workdir):
    out = workdir / "never.onnx"
    result = invoke("compile", f"{workdir / 'net.py'}:build_gated", "--input-shape", "1,1,8,8", "--data", "digits",
                    "--out", out, "--run-dir", workdir / "never-run", expect=2)
    assert "gate" in result.stderr and "net.py:8" in result.stderr and "if x.sum() > 0" in result.stderr
    assert "How to fix: mark it as a leaf module: --leaf gate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (workdir / "never-run").exists()


def test_leaf_makes_the_untraceable_model_inspectable(workdir):
    report = invoke_json("inspect", f"{workdir / 'net.py'}:build_gated", "--input-shape", "1,1,8,8", "--leaf", "gate")
    assert any(f["name"] == "gate" and "leaf" in f["reason"] for f in report["float_ops"])


def test_bad_bits_is_a_clear_error_also_under_json(model_spec):
    result = invoke("inspect", model_spec, "--input-shape", "1,1,8,8", "--w-bits", "9", expect=2)
    assert "--w-bits must be an integer in 1..8, got 9" in result.stderr and "How to fix:" in result.stderr
    doc = invoke_json("inspect", model_spec, "--input-shape", "1,1,8,8", "--w-bits", "9", expect=2)
    assert doc["ok"] is False and doc["error"]["type"] == "ConfigError" and doc["error"]["hint"]


def test_bad_model_spec_and_shape_are_user_errors(workdir):
    assert "How to fix:" in invoke("inspect", "nope.py:build", "--input-shape", "1,1,8,8", expect=2).stderr
    assert "bad input shape" in invoke("inspect", f"{workdir / 'net.py'}:build", "--input-shape", "1,x", expect=2).stderr


def test_unexpected_errors_exit_1_with_traceback_only_under_debug(model_spec, monkeypatch):
    from qcompile.cli.commands import inspection

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(inspection, "build_compiled", boom)
    quiet = invoke("inspect", model_spec, "--input-shape", "1,1,8,8", expect=1)
    assert "unexpected RuntimeError: kaboom" in quiet.stderr and "Traceback" not in quiet.stderr
    loud = invoke("--debug", "inspect", model_spec, "--input-shape", "1,1,8,8", expect=1)
    assert "Traceback" in loud.stderr


def test_epochs_zero_with_resume_is_refused_before_writing(workdir, model_spec):
    out = workdir / "ptq.onnx"
    result = invoke("compile", model_spec, "--input-shape", "1,1,8,8", "--data", "digits", "--epochs", "0",
                    "--resume", "--out", out, "--run-dir", workdir / "ptq-run", expect=2)
    assert "--resume needs training" in result.stderr and not out.exists()


# ----------------------------------------------------------------------------- compile → run → bench
def test_compile_summary(compiled):
    s = compiled["summary"]
    assert s["ok"] and compiled["out"].is_file() and compiled["fp32"].is_file()
    assert (compiled["run_dir"] / "qmodel.pt").is_file()
    assert s["training"]["steps"] == 6 and s["spec"]["w_bits"] == 4
    assert 0.0 <= s["accuracy"]["float"] <= 1.0 and s["accuracy"]["test_samples"] == 397
    parity = s["parity"]
    assert parity["acc_torch"] == pytest.approx(s["accuracy"]["quantized_torch"])
    assert abs(parity["acc_ort"] - parity["acc_torch"]) * parity["samples"] <= 1  # within one sample
    assert s["size"]["file_bytes"] == compiled["out"].stat().st_size
    assert s["size"]["weight_bytes"] < s["float_size"]["weight_bytes"]


def test_run_matches_the_compile_summary(compiled):
    report = invoke_json("run", compiled["out"], "--data", "digits", "--batch-size", "64")
    parity = compiled["summary"]["parity"]
    assert report["samples"] == 397 and report["accuracy"] == pytest.approx(parity["acc_ort"])
    assert report["normalization"] == "artifact" and report["method"] == "ste"
    assert "CPUExecutionProvider" in report["providers"]


def test_run_scores_a_plain_fp32_export_with_dataset_statistics(compiled):
    from qcompile.data import load_digits

    result = invoke("run", compiled["fp32"], "--data", "digits", "--providers", "cpu", "--json")
    report = json.loads(result.stdout)
    assert report["normalization"] == "dataset" and report["method"] is None  # no qcompile metadata to use
    assert report["mean"] == list(load_digits().mean)
    assert "plain ONNX file that records no normalisation: using the train statistics of digits" in \
        " ".join(result.stderr.split())
    assert abs(report["accuracy"] - compiled["summary"]["accuracy"]["float"]) * 397 <= 1


def test_bench_reports_sizes_latency_and_ratios(compiled):
    report = invoke_json("bench", compiled["out"], "--reference", compiled["fp32"], "--batch-sizes", "1,4",
                         "--repeats", "3", "--warmup", "1")
    model = report["model"]
    assert model["size"]["file_bytes"] == compiled["out"].stat().st_size
    assert model["size"]["bound_bytes"] <= model["size"]["file_bytes"]
    assert set(model["latency"]) == {"1", "4"} and all(v["median_ms"] > 0 for v in model["latency"].values())
    assert report["ratios"]["file_size"] == pytest.approx(
        compiled["out"].stat().st_size / compiled["fp32"].stat().st_size)
    assert set(report["ratios"]["latency"]) == {"1", "4"}


def test_bench_table(compiled):
    out = invoke("bench", compiled["out"], "--batch-sizes", "2", "--repeats", "2", "--warmup", "0").stdout
    assert "information bound" in out and "batch 2" in out


def test_finetune_then_resume_then_export_from_the_run_dir(compiled, workdir):
    run_dir = compiled["run_dir"]
    first = invoke_json("finetune", run_dir, "--epochs", "1", "--max-steps", "2", "--batch-size", "128",
                        "--checkpoint-every", "1")
    assert first["training"]["steps"] == 2 and not first["training"]["completed"]
    resumed = invoke_json("finetune", run_dir, "--epochs", "1", "--batch-size", "128", "--resume")
    assert resumed["training"]["completed"] and resumed["training"]["steps"] == 11  # ceil(1400 / 128)
    out = workdir / "again.onnx"
    exported = invoke_json("export", run_dir, "--out", out)
    assert out.is_file() and exported["parity"]["acc_torch"] == pytest.approx(resumed["accuracy"]["quantized_torch"])
    fp32 = workdir / "again-fp32.onnx"
    assert invoke_json("export", run_dir, "--out", fp32, "--float")["float"] is True and fp32.is_file()


def test_export_of_a_missing_run_dir_fails_cleanly(workdir):
    result = invoke("export", workdir, "--out", workdir / "x.onnx", expect=2)
    assert "qmodel.pt" in result.stderr and not (workdir / "x.onnx").exists()


TORCH_BLOCKED = textwrap.dedent("""
    import json, sys

    from click.testing import CliRunner
    from qcompile.cli.main import cli

    out = {}
    for args in (["run", sys.argv[1], "--data", "digits", "--json"],
                 ["bench", sys.argv[1], "--batch-sizes", "1", "--repeats", "2", "--warmup", "0", "--json"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        out[args[0]] = json.loads(result.stdout)
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
    print(json.dumps(out))
""")


def test_run_and_bench_work_without_torch(compiled, python_without):
    done = python_without(TORCH_BLOCKED, compiled["out"], blocked=("torch",))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["run"]["accuracy"] == pytest.approx(compiled["summary"]["parity"]["acc_ort"])
    assert out["bench"]["model"]["latency"]["1"]["median_ms"] > 0


# ----------------------------------------------------------------------------- demo
def test_demo_json(tmp_path):
    from qcompile.runtime.engine import is_x86

    report = invoke_json("demo", "--out-dir", tmp_path / "demo")
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["fp32", "W4A8", "W1A8 BWN"]
    assert rows["fp32"]["acc_torch"] > 0.9 and rows["W4A8"]["acc_ort"] > 0.85 and rows["W1A8 BWN"]["acc_ort"] > 0.5
    for row in rows.values():
        assert abs(row["acc_ort"] - row["acc_torch"]) * row["samples"] <= 1
        assert Path(row["path"]).is_file() and set(row["latency_ms"]) == {"1", "64"}
    assert rows["W1A8 BWN"]["target"] == "exact" and "bwn" in rows["W1A8 BWN"]["target_reason"]
    if is_x86():  # compile's default, auto, runs W4A8 on onnxruntime's integer kernels
        assert rows["W4A8"]["target"] == "ort-int8"
    assert all(row["max_abs_diff"] <= 1e-4 for row in rows.values())
    assert rows["W4A8"]["file_bytes"] < rows["fp32"]["file_bytes"] / 3
    assert rows["W1A8 BWN"]["file_bytes"] < rows["W4A8"]["file_bytes"]
    assert report["seconds"] < 120  # 12-21 s alone on 2 cores; the margin keeps a loaded CI machine from failing it


def test_resumed_finetune_records_each_epoch_once(tmp_path):
    """A finetune stopped by --max-steps and then resumed keeps one history record per epoch."""
    import qcompile
    from conftest import TinyBNNet

    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), w_bits=4, a_bits=8, data="digits")
    ckpt = tmp_path / "ckpt"
    cm.finetune(epochs=1, progress=False, batch_size=64)  # stage 0, completed
    first = cm.finetune(epochs=2, max_steps=30, checkpoint_dir=ckpt, progress=False, batch_size=64)
    assert not first.completed and cm.open_stage == 1
    cm.finetune(epochs=2, checkpoint_dir=ckpt, resume=True, progress=False, batch_size=64)
    assert cm.open_stage is None
    assert [(h["stage"], h["epoch"]) for h in cm.history if h["stage"] == 1] == [(1, 0), (1, 1)]


def test_compile_defaults_to_digits_and_rejects_mismatched_data(tmp_path):
    """No --data: scikit-learn's bundled digits; a model whose input shape differs gets a clear error."""
    model = tmp_path / "m.py"
    model.write_text("from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n")
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(cli, ["compile", f"{model}:build", "--input-shape", "1,1,28,28", "--out", str(out),
                                      "--epochs", "0", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "images are 1×8×8 but the model's example input is 1×28×28" in result.output
    assert not out.exists()
