"""Data-parallel training on 2 gloo ranks (CPU), launched with torch.distributed.run, against one process.

Each run of tests/ddp_worker.py is a tiny model on 10 samples; a 2-rank launch takes a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch

from qcompile import distributed
from qcompile.errors import ConfigError

WORKER = str(Path(__file__).with_name("ddp_worker.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def single(*args: str, worker: str = WORKER) -> None:
    subprocess.run([sys.executable, worker, *args], check=True, env=ENV, timeout=120)


def two_ranks(*args: str, check: bool = True, worker: str = WORKER) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", worker, *args]
    done = subprocess.run(cmd, env=ENV, timeout=120, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(done.stdout + done.stderr)
    return done


def test_two_rank_step_gives_the_full_batch_gradients_ranges_and_batchnorm_means(tmp_path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    single("step", str(tmp_path / "one"))
    two_ranks("step", str(tmp_path / "two"))
    reference = torch.load(tmp_path / "one" / "step-rank0.pt")
    ranks = [torch.load(tmp_path / "two" / f"step-rank{r}.pt") for r in (0, 1)]
    assert reference["world"] == 1 and ranks[0]["world"] == 2
    for r in ranks:  # the global batch of 5 splits 3 + 2 with different ranges; each rank sees the global one
        assert r["range"] == pytest.approx(reference["range"], abs=1e-6)
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(r["grads"][name], grad, atol=1e-6, rtol=1e-5)
    assert ranks[0]["range"] == ranks[1]["range"]
    # BatchNorm: the ranks keep the same running statistics; the mean is the global batch's
    torch.testing.assert_close(ranks[0]["bn"], ranks[1]["bn"], atol=0, rtol=0)
    torch.testing.assert_close(ranks[0]["bn"][0], reference["bn"][0], atol=1e-6, rtol=1e-5)


def test_sync_bn_gives_the_full_batch_gradients_and_statistics(tmp_path):
    """A global batch of 5 split 3 + 2: BatchNorm normalises with all 5, as one process does."""
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    single("syncbn", str(tmp_path / "one"))
    two_ranks("syncbn", str(tmp_path / "two"))
    reference = torch.load(tmp_path / "one" / "syncbn-rank0.pt")
    for r in (0, 1):
        rank = torch.load(tmp_path / "two" / f"syncbn-rank{r}.pt")
        torch.testing.assert_close(rank["bn"], reference["bn"], atol=1e-6, rtol=1e-5)
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("first, then", [("two", "one"), ("one", "two")])
def test_a_checkpoint_resumes_under_another_world_size(tmp_path, first, then):
    """Stopped at step 4 of 6 (inside epoch 2) by one world size, finished by the other: the same
    weights as one uninterrupted process, because the data order depends on (seed, epoch) only."""
    run = {"one": single, "two": two_ranks}
    (tmp_path / "ref").mkdir(), (tmp_path / "run").mkdir()
    single("train", str(tmp_path / "ref"), "6")
    run[first]("train", str(tmp_path / "run"), "4")
    run[then]("train", str(tmp_path / "run"), "6", "resume")
    reference = torch.load(tmp_path / "ref" / "train-6-world1.pt")
    resumed = torch.load(tmp_path / "run" / f"train-6-world{1 if then == 'one' else 2}.pt")
    assert resumed["steps"] == reference["steps"] == 6
    for name, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, atol=1e-5, rtol=1e-4)
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in reference["history"]], rel=1e-5)


def test_a_rank_that_raises_ends_the_job_with_its_error(tmp_path):
    done = two_ranks("raise", str(tmp_path), check=False)
    assert done.returncode != 0
    assert "rank 1 failed on purpose" in done.stdout + done.stderr


def test_batches_too_small_for_the_ranks_are_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    with pytest.raises(ConfigError, match="leaves a batch of 2 sample"):
        distributed.check_batches(10, 8)
    distributed.check_batches(12, 8)  # batches of 8 and 4: one sample or more per rank


def test_loops_not_yet_data_parallel_are_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="does not run data-parallel yet"):
        distributed.refuse("the codec's rate-distortion training")


def test_a_strategy_that_does_not_say_how_to_share_its_update_is_refused(monkeypatch):
    from qcompile.train.data_parallel import data_parallel
    from qcompile.train.strategy import StepStrategy

    class OwnUpdate(StepStrategy):  # the contract's abstract methods, nothing for several ranks
        setup = step = state_dict = load_state_dict = lr = None

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="OwnUpdate training step does not run data-parallel yet"):
        data_parallel(torch.nn.Linear(2, 2), OwnUpdate(), 10, 4, seed=0, global_step=0)


def test_torchrun_compile_writes_one_run_dir_and_one_json_document(tmp_path):
    """`torchrun -m qcompile compile` on 2 ranks: rank 0 alone prints the summary and writes the files."""
    import json

    from test_cli import MODEL_SOURCE

    (tmp_path / "net.py").write_text(MODEL_SOURCE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "qcompile",
           "compile", "net.py:build", "--input-shape", "1,1,8,8", "--data", "digits", "--epochs", "1",
           "--max-steps", "4", "--batch-size", "32", "--sync-bn", "--out", "m.onnx", "--run-dir", "run", "--json"]
    done = subprocess.run(cmd, cwd=tmp_path, env=ENV, timeout=180, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)  # exactly one document: rank 1 printed nothing
    assert summary["training"]["steps"] == 4
    assert summary["parity"]["max_abs_diff"] <= 1e-4  # the export matches the model rank 0 trained
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "run" / "checkpoints" / "checkpoint.pt").is_file()


def test_cpu_ranks_split_the_cores_when_omp_num_threads_is_unset(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        assert distributed.split_threads() == "OMP_NUM_THREADS unset: 5 thread(s) per rank (16 cores, 3 rank(s) " \
                                              "on this node)"
        assert torch.get_num_threads() == 5 and os.environ["OMP_NUM_THREADS"] == "5"
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # torchrun's default is left alone, with a note
        torch.set_num_threads(1)
        assert "use 3 of 16 cores" in distributed.split_threads() and torch.get_num_threads() == 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
        assert distributed.split_threads() is None
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "40")  # more ranks than cores: still one thread each
        monkeypatch.delenv("OMP_NUM_THREADS")
        distributed.split_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_nproc_launches_torchrun_with_the_cores_split_when_omp_num_threads_is_unset(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    command, env, note = distributed.launch_command(3, ["compile", "m.py:build"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3", "-m", "qcompile",
                           "compile", "m.py:build"]
    assert env["OMP_NUM_THREADS"] == "5" and note == "OMP_NUM_THREADS unset: 5 thread(s) per rank (16 cores, 3 ranks)"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice is kept
    assert distributed.launch_command(3, [])[1:] == ({**os.environ}, None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="torchrun already started"):
        distributed.launch_command(2, [])



@pytest.mark.parametrize("error, barrier", [(None, True), (click.exceptions.Exit(0), True), (RuntimeError("x"), False),
                                            (click.exceptions.Exit(2), False)])
def test_teardown_meets_the_other_ranks_only_on_a_clean_exit(monkeypatch, error, barrier):
    """A clean exit (no exception, or click's Exit(0)) waits for every rank before closing connections (rank 0
    may still be writing); after an error it must not: a peer may be blocked in another collective."""
    calls = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: calls.append("destroy"))
    try:
        if error is not None:
            raise error
        distributed.teardown()
    except BaseException:
        distributed.teardown()
    assert calls == (["barrier", "destroy"] if barrier else ["destroy"])


class _Exited(Exception):
    """Stands in for os._exit in tests: carries the code."""


@pytest.mark.parametrize("outcome, code, message", [(None, 0, ""), (SystemExit(0), 0, ""), (SystemExit(2), 2, ""),
                                                     (SystemExit(None), 0, ""), (SystemExit("bad"), 1, "bad\n")])
def test_a_rank_leaves_with_its_commands_exit_code_after_flushing(monkeypatch, capsys, outcome, code, message):
    """run_rank skips the interpreter's finalisation (where a backend thread can abort a finished rank) but keeps
    the exit code, and prints a SystemExit message as Python would."""
    def entry():
        print("written", flush=False)
        if outcome is not None:
            raise outcome

    def fake_exit(status):
        raise _Exited(status)

    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(_Exited) as exited:
        distributed.run_rank(entry)
    assert exited.value.args == (code,)
    captured = capsys.readouterr()
    assert captured.out == "written\n" and captured.err == message


def test_a_rank_that_hits_a_bug_raises_it_with_its_traceback(monkeypatch):
    monkeypatch.setattr(os, "_exit", lambda status: pytest.fail("a bug must not be turned into an exit code"))
    with pytest.raises(ValueError, match="bug"):
        distributed.run_rank(lambda: (_ for _ in ()).throw(ValueError("bug")))
