"""``qcompile-runtime``, the runtime's own command line: run and bench with torch unimportable, the same
numbers as ``qcompile run|bench``, and user errors that exit 2 with a fix.

Most commands run in a subprocess whose import system refuses torch (and, where said, onnx, pillow or
scikit-learn), the way a deployment machine without them would. They score the committed fixture
(tests/fixtures/make_runtime_fixture.py) whose expected result is stored beside it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import qcompile.data
import qcompile.errors
import qcompile.runtime.data
from qcompile.cli.main import cli as qcompile_cli
from qcompile.runtime import errors as runtime_errors
from qcompile.runtime.cli import main as runtime_main
from qcompile.runtime.cli.command import Subcommand

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARTIFACT, DATA = FIXTURES / "digits-w4a8.onnx", f"npz:{FIXTURES / 'digits.npz'}"
EXPECTED = json.loads((FIXTURES / "digits-w4a8.json").read_text())
QUICK_BENCH = ["--batch-sizes", "1,4", "--repeats", "3", "--warmup", "1"]

ENTRY_POINT = """
from qcompile.runtime.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def runtime_cli(python_without):
    """``runtime_cli(*args, block=("torch",), expect=0)``: ``qcompile-runtime ARGS`` in a fresh interpreter
    where the ``block``ed top-level packages cannot be imported; checks the exit code."""

    def run(*args: object, block: tuple[str, ...] = ("torch",), expect: int = 0) -> subprocess.CompletedProcess:
        done = python_without(ENTRY_POINT, *args, blocked=block)
        assert done.returncode == expect, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done

    return run


@pytest.fixture
def runtime_json(runtime_cli):
    """As ``runtime_cli`` with ``--json``: the one JSON document on stdout."""

    def run(*args: object, block: tuple[str, ...] = ("torch",), expect: int = 0) -> dict:
        return json.loads(runtime_cli(*args, "--json", block=block, expect=expect).stdout)

    return run


def qcompile_json(*args: str) -> dict:
    result = CliRunner().invoke(qcompile_cli, [*map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ----------------------------------------------------------------------------- run
def test_run_reproduces_the_fixture_accuracy_without_torch(runtime_json):
    report = runtime_json("run", ARTIFACT, "--data", DATA)
    assert report["ok"] is True
    assert (report["accuracy"], report["correct"], report["samples"]) == (
        EXPECTED["accuracy"], EXPECTED["correct"], EXPECTED["samples"])
    assert report["task"] == "classification" and report["spinning"] is False  # the runtime's default
    assert report["normalization"] == "artifact" and report["method"] == "ste"
    assert [layer["w_bits"] for layer in report["layers"]] == [4] * len(report["layers"]) and report["layers"]


def test_run_gives_the_numbers_of_qcompile_run(runtime_json):
    ours = runtime_json("run", ARTIFACT, "--data", DATA, "--batch-size", "50", "--providers", "cpu")
    theirs = qcompile_json("run", ARTIFACT, "--data", DATA, "--batch-size", "50", "--providers", "cpu")
    same = ("ok", "model", "data", "task", "accuracy", "spinning", "mean", "std", "correct", "samples", "providers", "normalization", "method", "layers")
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    assert set(ours) == set(theirs)


def test_run_text_output(runtime_cli):
    out = runtime_cli("run", ARTIFACT, "--data", DATA).stdout.splitlines()
    assert out[0] == f"{ARTIFACT} on {DATA} (test split)"
    assert out[1].split() == ["accuracy", f"{100 * EXPECTED['accuracy']:.2f}%",
                              f"({EXPECTED['correct']}/{EXPECTED['samples']})"]
    assert out[3].split() == ["providers", "CPUExecutionProvider"] and out[4].split() == ["method", "ste"]
    assert out[5].startswith("  normalisation  the artifact's: mean [")


# ----------------------------------------------------------------------------- bench
def test_bench_gives_the_sizes_of_qcompile_bench_and_times_every_batch_size(runtime_json):
    ours = runtime_json("bench", ARTIFACT, "--reference", ARTIFACT, *QUICK_BENCH, "--spin")
    theirs = qcompile_json("bench", ARTIFACT, "--reference", ARTIFACT, *QUICK_BENCH, "--spin")
    assert ours["model"]["spinning"] is theirs["model"]["spinning"] is True
    assert ours["model"]["size"] == theirs["model"]["size"]
    size = ours["model"]["size"]
    assert size["file_bytes"] == ARTIFACT.stat().st_size and size["bound_note"] is None
    assert 0 < size["bound_bytes"] <= size["weight_bytes"] <= size["file_bytes"]
    assert size["file_over_bound"] == pytest.approx(size["file_bytes"] / size["bound_bytes"])
    assert ours["ratios"]["file_size"] == 1.0 and set(ours["ratios"]["latency"]) == {"1", "4"}
    for report in (ours, theirs):
        assert set(report["model"]["latency"]) == {"1", "4"}
        assert all(v["median_ms"] > 0 for v in report["model"]["latency"].values())


def test_bench_without_onnx_reports_the_file_size_and_how_to_get_the_bound(runtime_cli, runtime_json):
    report = runtime_json("bench", ARTIFACT, *QUICK_BENCH, block=("torch", "onnx"))
    size = report["model"]["size"]
    assert size["file_bytes"] == ARTIFACT.stat().st_size
    assert size["bound_bytes"] is None and size["weight_bytes"] is None and size["file_over_bound"] is None
    assert size["bound_note"] == ("information bound not computed: reading the file's tensors needs the onnx "
                                  "package; pip install 'qcompile-runtime[onnx]' (or: pip install onnx)")
    text = runtime_cli("bench", ARTIFACT, *QUICK_BENCH, block=("torch", "onnx")).stdout
    lines = [line.strip() for line in text.splitlines()]
    assert lines[-1] == size["bound_note"]
    assert [line.split() for line in lines if line.startswith(("stored tensors", "information bound  "))] == [
        ["stored", "tensors", "—"], ["information", "bound", "—"]]


def test_bench_text_shows_every_metric_row(runtime_cli):
    text = runtime_cli("bench", ARTIFACT, *QUICK_BENCH).stdout
    rows = [line.strip() for line in text.splitlines()]
    assert rows[0] == "Size and onnxruntime latency"
    for label in ("file ", "stored tensors", "information bound", "file / bound", "latency, batch 1 (median)",
                  "latency, batch 4 (median)"):
        assert any(r.startswith(label) for r in rows), label
    assert f"model: {ARTIFACT} (CPUExecutionProvider)" in rows


# ----------------------------------------------------------------------------- errors
def test_missing_model_is_exit_2_with_a_fix_also_under_json(runtime_cli):
    done = runtime_cli("run", FIXTURES / "nope.onnx", "--data", DATA, "--json", expect=2)
    assert json.loads(done.stdout) == {"ok": False, "error": {
        "type": "ArtifactError", "message": f"model file {FIXTURES / 'nope.onnx'} does not exist",
        "hint": "pass the path of an exported .onnx file or bundle"}}
    assert done.stderr.splitlines()[-2:] == [f"Error: model file {FIXTURES / 'nope.onnx'} does not exist",
                                             "How to fix: pass the path of an exported .onnx file or bundle"]


def test_bad_data_spec_is_a_data_error(runtime_json):
    report = runtime_json("run", ARTIFACT, "--data", "imagenet", expect=2)
    assert report["error"]["type"] == "DataError" and report["error"]["message"] == "unknown data spec 'imagenet'"


def test_a_normalisation_that_contradicts_the_artifacts_is_refused(runtime_json):
    clash = runtime_json("run", ARTIFACT, "--data", DATA, "--norm", "MNIST", expect=2)["error"]
    assert clash["type"] == "NormalizationError" and "records its normalisation (artifact: mean " in clash["message"]
    half = runtime_json("run", ARTIFACT, "--data", DATA, "--mean", "0.5", expect=2)["error"]
    assert (half["type"], half["message"]) == ("NormalizationError", "mean was given without std")


def test_unknown_task_is_a_task_error_before_anything_is_loaded(runtime_json):
    report = runtime_json("run", FIXTURES / "nope.onnx", "--data", "imagenet", "--task", "codec", expect=2)
    assert report["error"] == {"type": "TaskError", "message": "unknown task 'codec'",
                               "hint": "use one of: classification"}


@pytest.mark.parametrize("args, message, help_of", [
    (["run", "m.onnx"], "the following arguments are required: --data/-d", "qcompile-runtime run"),
    (["run", "m.onnx", "--data", "digits", "-b", "0"], "argument --batch-size/-b: 0 is below the minimum of 1",
     "qcompile-runtime run"),
    (["bench", "m.onnx", "--batch-sizes", "1,x"],
     "argument --batch-sizes: '1,x': write comma-separated positive integers, e.g. 1,64", "qcompile-runtime bench"),
    # argparse quotes the choices differently across Python versions: only the start is compared
    (["bench", "m.onnx", "--providers", "tpu"], "argument --providers: invalid choice: 'tpu' (choose from ",
     "qcompile-runtime bench"),
    (["decompress", "m.onnx"], "argument COMMAND: invalid choice: 'decompress' (choose from ", "qcompile-runtime"),
])
def test_command_line_mistakes_are_exit_2_with_a_fix(args, message, help_of, capsys):
    assert runtime_main.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-2].startswith(f"Error: {message}")
    assert err[-1] == f"How to fix: see `{help_of} --help`"


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert runtime_main.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: qcompile-runtime") and "run " in err and "bench " in err


def test_every_command_has_help_mentioning_json_and_the_version(capsys):
    for name in [c.name for c in runtime_main.SUBCOMMANDS]:
        with pytest.raises(SystemExit) as e:
            runtime_main.main([name, "--help"])
        assert e.value.code == 0 and "--json" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        runtime_main.main(["--version"])
    assert capsys.readouterr().out.strip() == f"qcompile-runtime {qcompile.runtime.__version__}"


def test_digits_without_scikit_learn_names_the_extra(runtime_json):
    report = runtime_json("run", ARTIFACT, "--data", "digits", block=("torch", "sklearn"), expect=2)
    assert report["error"] == {
        "type": "MissingDependencyError",
        "message": "the 'digits' data set needs the scikit-learn package, which is not installed",
        "hint": "pip install 'qcompile-runtime[digits]' (or: pip install scikit-learn)"}


def test_folder_data_without_pillow_names_the_extra(tmp_path, runtime_json):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    report = runtime_json("run", ARTIFACT, "--data", f"folder:{tmp_path}", block=("torch", "PIL"), expect=2)
    assert report["error"]["type"] == "MissingDependencyError"
    assert report["error"]["message"] == (
        "'folder:' data (reading images) needs the pillow package, which is not installed")
    assert report["error"]["hint"] == "pip install 'qcompile-runtime[images]' (or: pip install pillow)"


def test_an_unexpected_error_is_exit_1_a_bug_with_the_traceback_only_under_debug(monkeypatch, capsys):
    def explode(args, log):
        raise RuntimeError("boom")

    broken = Subcommand("explode", "Fails.", lambda parser: None, explode, lambda report: "")
    monkeypatch.setattr(runtime_main, "SUBCOMMANDS", (*runtime_main.SUBCOMMANDS, broken))
    monkeypatch.delenv("QCOMPILE_DEBUG", raising=False)
    assert runtime_main.main(["explode"]) == 1
    err = capsys.readouterr().err
    assert "Error: unexpected RuntimeError: boom" in err and "qcompile-runtime --debug" in err
    assert "Traceback" not in err
    assert runtime_main.main(["--debug", "explode"]) == 1
    assert "Traceback" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one implementation
def test_the_compiler_imports_the_runtimes_data_loaders_and_data_error():
    assert qcompile.data.load_dataset is qcompile.runtime.data.load_dataset
    assert qcompile.data.ArrayDataset is qcompile.runtime.data.ArrayDataset
    assert qcompile.errors.DataError is runtime_errors.DataError
    assert issubclass(runtime_errors.DataError, qcompile.errors.ActionableError)
