"""Run directories over their life: interrupted, failed, resumed (after a real ``kill -9`` too), damaged, and
exported again byte for byte — driven through the command line, the README's lines included verbatim."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import digits_cnn_file
from qcompile.cli.main import cli
from qcompile.run_state import COMPLETE, FAILED, INTERRUPTED, RUNNING, read_state

README = Path(__file__).resolve().parents[1] / "README.md"
EXTRA = """

def build28():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
"""
STEPS_PER_EPOCH = 44  # ceil(1,400 digits / 32)


def invoke(*args, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def invoke_json(*args, expect: int = 0) -> dict:
    return json.loads(invoke(*args, "--json", expect=expect).stdout)


def readme_line(prefix: str) -> list[str]:
    """The README's command line that starts with ``prefix``, as arguments after ``qcompile``."""
    lines = [line.split("#")[0].strip() for line in README.read_text().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"README has {len(lines)} lines starting with {prefix!r}"
    return shlex.split(lines[0])[1:]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle")
    digits_cnn_file(root, "net", EXTRA)  # net.py, net-w.pt
    return root


def compile_args(workdir: Path) -> list[str]:
    """A 2-epoch W4A8 compile that checkpoints every 5 steps (the one the tests interrupt)."""
    return ["compile", f"{workdir / 'net.py'}:build", "--weights", str(workdir / "net-w.pt"), "--input-shape", "1,1,8,8",
            "--data", "digits", "--epochs", "2", "--batch-size", "32", "--checkpoint-every", "5"]


@pytest.fixture(scope="module")
def reference(workdir) -> dict:
    """The uninterrupted compile every interrupted one must end up identical to."""
    out, run_dir = workdir / "ref.onnx", workdir / "ref-run"
    summary = invoke_json(*compile_args(workdir), "--out", out, "--run-dir", run_dir)
    return {"out": out, "run_dir": run_dir, "summary": summary}


# ----------------------------------------------------------------------------- complete runs
def test_a_compiled_run_is_complete_and_exports_the_same_bytes(reference, workdir):
    state = read_state(reference["run_dir"])
    assert state.status == COMPLETE and state.call.epochs == 2 and state.call.completed
    assert state.call.options == {"batch_size": 32, "checkpoint_every": 5}
    again = workdir / "ref-again.onnx"
    exported = invoke_json("export", reference["run_dir"], "--out", again)
    assert again.read_bytes() == reference["out"].read_bytes()
    assert exported["parity"] == reference["summary"]["parity"]


def test_export_needs_only_the_run_dir(workdir, tmp_path):
    """The data the run was compiled with is gone: export still writes the same file, and says it skipped the check."""
    from qcompile.data import load_digits

    d = load_digits()
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=d.train.x[:300], y_train=d.train.y[:300], x_test=d.test.x[:100], y_test=d.test.y[:100])
    out, run_dir = tmp_path / "a.onnx", tmp_path / "run"
    compiled = invoke_json("compile", f"{workdir / 'net.py'}:build", "--weights", workdir / "net-w.pt", "--input-shape",
                           "1,1,8,8", "--data", f"npz:{data}", "--epochs", "0", "--out", out, "--run-dir", run_dir)
    data.unlink()
    again = tmp_path / "b.onnx"
    exported = invoke_json("export", run_dir, "--out", again)
    assert again.read_bytes() == out.read_bytes()
    assert exported["normalization"] == compiled["normalization"] and exported["normalization"]["source"] == "data"
    assert exported["classes"] == [str(i) for i in range(10)] and "parity" not in exported
    assert exported["parity_skipped"].startswith(f"the run's data npz:{data} cannot be read here")


def test_resume_on_a_finished_run_says_there_is_nothing_to_resume(reference):
    result = invoke("finetune", reference["run_dir"], "--epochs", "2", "--resume", expect=2)
    assert f"Error: {reference['run_dir']} has nothing to resume: its last training call (compile, 2 epoch(s)) " \
           "finished" in result.stderr
    assert f"qcompile finetune {reference['run_dir']} --epochs N" in result.stderr


def test_a_run_keeps_its_normalisation(reference, workdir):
    result = invoke("export", reference["run_dir"], "--out", workdir / "x.onnx", "--norm", "mnist", expect=2)
    assert "normalisation is already fixed (data: mean" in result.stderr and not (workdir / "x.onnx").exists()


# ----------------------------------------------------------------------------- interrupted runs
def test_kill_9_during_compile_then_the_readme_lines_finish_and_export_it(reference, workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*compile_args(workdir), "--out", "cnn-w4a8.onnx"]  # run dir: runs/cnn-w4a8, as in the README
    proc = subprocess.Popen([sys.executable, "-m", "qcompile.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = Path("runs/cnn-w4a8")
    checkpoint = run_dir / "checkpoints" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no handler runs, run.json stays 'running'
    proc.wait()
    assert json.loads((run_dir / "run.json").read_text())["status"] == RUNNING
    assert read_state(run_dir).status == INTERRUPTED and (run_dir / "qmodel.pt").is_file()
    assert not Path("cnn-w4a8.onnx").exists()

    refused = invoke("export", run_dir, "--out", "x.onnx", expect=2)
    assert "cannot export runs/cnn-w4a8: its compile was interrupted while training (2 epoch(s) asked)" in refused.stderr
    assert "How to fix: finish the training first: qcompile finetune runs/cnn-w4a8 --resume" in refused.stderr

    resumed = invoke_json(*readme_line("qcompile finetune runs/cnn-w4a8 --resume"))
    assert resumed["training"]["completed"] and resumed["training"]["steps"] == 2 * STEPS_PER_EPOCH
    assert read_state(run_dir).status == COMPLETE
    invoke(*readme_line("qcompile export runs/cnn-w4a8"))
    assert Path("cnn-w4a8.onnx").read_bytes() == reference["out"].read_bytes()

    more = invoke_json(*readme_line("qcompile finetune runs/cnn-w4a8 --epochs 2"))  # 2 more epochs, at batch 64
    assert more["training"]["completed"] and more["training"]["steps"] == 2 * 22  # ceil(1,400 / 64) per epoch
    history = json.loads((run_dir / "history.json").read_text())["history"]
    assert [(h["stage"], h["epoch"]) for h in history] == [(0, 0), (0, 1), (1, 0), (1, 1)]


class Injected:
    """Make the training step raise ``exc`` at the ``at``-th step from now (in this process)."""

    def __init__(self, monkeypatch, exc: BaseException, at: int):
        from qcompile.train.strategy import StandardStep

        original, calls = StandardStep.step, [0]

        def step(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == at:
                raise exc
            return original(self, *args, **kwargs)

        monkeypatch.setattr(StandardStep, "step", step)


def test_a_run_stopped_or_failed_while_training_is_marked_and_resumable(reference, workdir, tmp_path, monkeypatch):
    out, run_dir = tmp_path / "m.onnx", tmp_path / "run"
    with monkeypatch.context() as m:
        Injected(m, KeyboardInterrupt(), at=8)
        invoke(*compile_args(workdir), "--out", out, "--run-dir", run_dir, expect=1)  # click: "Aborted!"
    state = read_state(run_dir)
    assert state.status == INTERRUPTED and state.call.command == "compile" and not out.exists()

    result = invoke("finetune", run_dir, "--epochs", "1", expect=2)
    assert f"cannot train {run_dir}: its compile was interrupted while training" in result.stderr
    result = invoke("finetune", run_dir, "--resume", "--epochs", "3", expect=2)
    assert "--epochs 3 with --resume, but the call being resumed (compile) asked for 2 epoch(s)" in result.stderr

    with monkeypatch.context() as m:
        Injected(m, RuntimeError("the disk is on fire"), at=30)
        invoke("finetune", run_dir, "--resume", expect=1)
    state = read_state(run_dir)
    assert state.status == FAILED and state.error == "the disk is on fire"
    result = invoke("export", run_dir, "--out", out, expect=2)
    assert "its compile failed while training (2 epoch(s) asked): the disk is on fire" in result.stderr

    resumed = invoke_json("finetune", run_dir, "--resume")
    assert resumed["training"]["steps"] == 2 * STEPS_PER_EPOCH and read_state(run_dir).status == COMPLETE
    invoke("export", run_dir, "--out", out)
    assert out.read_bytes() == reference["out"].read_bytes()  # resumed twice, bit-identical to uninterrupted


def test_resume_trains_on_the_data_the_interrupted_call_was_given(reference, tmp_path, monkeypatch):
    from qcompile.data import load_digits

    d = load_digits()
    data = tmp_path / "more.npz"
    np.savez(data, x_train=d.train.x[:300], y_train=d.train.y[:300], x_test=d.test.x[:50], y_test=d.test.y[:50])
    run_dir = tmp_path / "run"
    shutil.copytree(reference["run_dir"], run_dir)
    with monkeypatch.context() as m:
        Injected(m, KeyboardInterrupt(), at=3)
        invoke("finetune", run_dir, "--data", f"npz:{data}", "--checkpoint-every", "1", expect=1)
    assert read_state(run_dir).call.data == f"npz:{data}"
    resumed = invoke_json("finetune", run_dir, "--resume")  # no --data: the call's own
    assert resumed["training"]["steps"] == 5 and resumed["accuracy"]["test_samples"] == 50  # ceil(300 / 64)


def test_a_run_in_use_by_a_live_process_is_refused(reference, tmp_path):
    import socket

    run_dir = tmp_path / "run"
    shutil.copytree(reference["run_dir"], run_dir)
    state = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**state, "status": RUNNING, "pid": os.getpid(),
                                                  "host": socket.gethostname()}))
    for args in (["export", run_dir, "--out", tmp_path / "x.onnx"], ["finetune", run_dir, "--resume"]):
        result = invoke(*args, expect=2)
        assert f"{run_dir} is being trained by another qcompile process (pid {os.getpid()})" in result.stderr
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / "run.json").write_text(json.dumps({**state, "status": RUNNING, "pid": int(gone.stdout),
                                                  "host": socket.gethostname()}))
    assert read_state(run_dir).status == INTERRUPTED


# ----------------------------------------------------------------------------- damaged runs
@pytest.mark.parametrize("damage, message", [
    ("truncate", "it is not a file written by torch.save, or it is damaged or truncated (RuntimeError)"),
    ("garbage", "it is not a file written by torch.save, or it is damaged or truncated (UnpicklingError)"),
    ("format", "has format version 99; this qcompile reads version 1"),
    ("incomplete", "is incomplete: it lacks input_shapes, spec, leaf_modules, float_state, state, history"),
])
def test_a_damaged_qmodel_is_a_clear_error(reference, tmp_path, damage, message):
    run_dir = tmp_path / "run"
    shutil.copytree(reference["run_dir"], run_dir)
    qmodel = run_dir / "qmodel.pt"
    if damage == "truncate":
        qmodel.write_bytes(qmodel.read_bytes()[:2000])
    elif damage == "garbage":
        qmodel.write_bytes(b"not a model at all\n" * 10)
    else:
        torch.save({"format": 99} if damage == "format" else {"format": 1, "model": "x.py:build"}, qmodel)
    for args in (["export", run_dir, "--out", tmp_path / "x.onnx"], ["finetune", run_dir, "--epochs", "1"]):
        result = invoke(*args, expect=2)
        assert message in result.stderr and "How to fix:" in result.stderr
        assert "weights_only" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


# ----------------------------------------------------------------------------- runs without data
def test_weight_only_compile_needs_no_data(workdir, tmp_path):
    """28×28 model, no --data, nothing to calibrate or train: no data is loaded (digits would not fit)."""
    out, run_dir = tmp_path / "w.onnx", tmp_path / "run"
    args = ["compile", f"{workdir / 'net.py'}:build28", "--input-shape", "1,1,28,28", "--a-bits", "none",
            "--epochs", "0", "--out", out, "--run-dir", run_dir]
    summary = invoke_json(*args)
    assert summary["accuracy"] is None and summary["normalization"] is None and summary["classes"] is None
    assert summary["parity_skipped"] == "no data was given or needed" and "parity" not in summary
    assert read_state(run_dir).status == COMPLETE and out.is_file()
    table = invoke(*args).stdout
    assert "onnxruntime check" in table and "skipped: no data was given or needed" in table
    assert "accuracy" in table and "not measured (no data)" in table

    from qcompile.runtime import Session

    assert Session(out).artifact.mean is None
    supplied = tmp_path / "w-mnist.onnx"
    invoke("export", run_dir, "--out", supplied, "--norm", "mnist")  # a run without one may be given one
    assert Session(supplied).artifact.mean == (0.1307,)

    rng = np.random.default_rng(0)
    data = tmp_path / "d28.npz"
    np.savez(data, x=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y=rng.integers(0, 10, 50))
    refused = invoke("run", out, "--data", f"npz:{data}", expect=2)
    assert f"Error: {out} is a qcompile artifact that records no input normalisation" in refused.stderr
    given = invoke_json("run", out, "--data", f"npz:{data}", "--norm", "mnist")
    assert (given["normalization"], given["mean"], given["std"]) == ("given", [0.1307], [0.3081])
    recorded = invoke_json("run", supplied, "--data", f"npz:{data}")
    assert recorded["normalization"] == "artifact" and recorded["accuracy"] == given["accuracy"]
    clash = invoke("run", supplied, "--data", f"npz:{data}", "--mean", "0.5", "--std", "0.5", expect=2)
    assert "records its normalisation (artifact: mean 0.1307 / std 0.3081); the one given differs" in clash.stderr


def test_a_compile_that_fails_before_training_leaves_nothing(workdir, tmp_path):
    """Activations need calibration data; the default digits do not fit a 28×28 model."""
    out, run_dir = tmp_path / "m.onnx", tmp_path / "run"
    result = invoke("compile", f"{workdir / 'net.py'}:build28", "--input-shape", "1,1,28,28", "--epochs", "1",
                    "--out", out, "--run-dir", run_dir, expect=2)
    assert "the data's images are 1×8×8 but the model's example input is 1×28×28" in result.stderr
    assert not out.exists() and not run_dir.exists()
