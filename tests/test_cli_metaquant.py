"""MetaQuant from the command line: flags → ``method_options``, tiny compiles on 8×8 digits with
onnxruntime parity, the per-step meta metrics in the summary and in ``RUN_DIR/history.json``.

Runs are capped at a few steps (MetaQuant's step costs a few STE steps on this tiny net).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import digits_cnn_file
from qcompile.cli.main import cli

ALL_META_FLAGS = ["--meta", "lstmfc", "--meta-hidden", "16", "--meta-layers", "2", "--meta-nonlinearity", "tanh",
                  "--no-meta-bias", "--forward-mode", "reference", "--meta-lr", "1e-4", "--meta-lr-decay",
                  "--meta-chunk-size", "0"]


def invoke_json(*args, expect: int = 0) -> dict:
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--json"])
    assert result.exit_code == expect, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli-metaquant")
    path, weights = digits_cnn_file(root, "mqnet")
    return {"root": root, "args": [f"{path}:build", "--weights", weights, "--input-shape", "1,1,8,8"]}


def test_inspect_turns_every_meta_flag_into_method_options(model):
    report = invoke_json("inspect", *model["args"], "--method", "metaquant", "--quantizer", "dorefa", "--w-bits", "1",
                         *ALL_META_FLAGS)
    assert report["spec"]["method_options"] == {
        "meta": "lstmfc", "hidden": 16, "layers": 2, "nonlinearity": "tanh", "bias": False,
        "forward_mode": "reference", "meta_lr": 1e-4, "meta_lr_decay": True, "chunk_size": 0}
    assert report["method"] == "metaquant" and {s["quantizer"] for s in report["sites"]} == {"dorefa"}


def test_only_given_meta_flags_are_passed_and_defaults_stay_the_apis(model):
    report = invoke_json("inspect", *model["args"], "--method", "metaquant", "--quantizer", "bwn", "--w-bits", "1")
    assert report["spec"]["method_options"] == {} and report["spec"]["a_bits"] == 8


@pytest.mark.parametrize("method", [["--method", "ste"], []])
def test_meta_flags_with_another_method_are_an_error_with_a_hint(model, method):
    doc = invoke_json("inspect", *model["args"], *method, "--meta", "multifc", "--no-meta-bias", expect=2)
    assert doc["ok"] is False and doc["error"]["type"] == "ConfigError"
    assert "--meta, --no-meta-bias configure MetaQuant" in doc["error"]["message"]
    assert "add --method metaquant" in doc["error"]["hint"]


def test_metaquant_with_a_quantizer_it_cannot_wrap_is_refused(model):
    doc = invoke_json("inspect", *model["args"], "--method", "metaquant", "--quantizer", "uniform", expect=2)
    assert "dorefa" in doc["error"]["hint"]


def check_parity(summary: dict) -> None:
    parity = summary["parity"]
    assert parity["max_abs_diff"] <= 1e-4
    assert abs(parity["acc_ort"] - parity["acc_torch"]) * parity["samples"] <= 1


def test_compile_dorefa_multifc_with_a_step_schedule(model):
    """The README's MetaQuant command (on digits, with a step lr schedule): meta metrics summarised and kept per step."""
    run_dir = model["root"] / "run-multifc"
    s = invoke_json("compile", *model["args"], "--method", "metaquant", "--meta", "multifc", "--quantizer", "dorefa",
                    "--w-bits", "1", "--optimizer", "sgd", "--lr", "1e-3", "--data", "digits", "--epochs", "2",
                    "--batch-size", "512", "--schedule", "step", "--step-size", "1", "--gamma", "0.5",
                    "--out", model["root"] / "mq.onnx", "--run-dir", run_dir)
    assert s["spec"]["method"] == "metaquant" and s["spec"]["method_options"] == {"meta": "multifc"}
    assert s["training"]["steps"] == 6  # 2 epochs of ceil(1400 / 512)
    assert [r["lr"] for r in s["training"]["history"]] == pytest.approx([1e-3, 5e-4])
    extra = s["training"]["extra_metrics"]
    assert extra["meta_gain"]["count"] == 6 and extra["meta_loss"]["count"] == 5  # no meta loss on iteration 1
    check_parity(s)
    saved = json.loads((run_dir / "history.json").read_text())
    assert saved["label"] == "metaquant/multifc dorefa W1A8" and len(saved["history"]) == 2
    assert [r["step"] for r in saved["steps"]] == list(range(1, 7))
    assert saved["steps"][-1]["meta_gain"] == pytest.approx(extra["meta_gain"]["last"])


def test_compile_bwn_fc_grad_then_finetune_and_resume_keep_steps_once(model):
    run_dir = model["root"] / "run-fcgrad"
    s = invoke_json("compile", *model["args"], "--method", "metaquant", "--meta", "fc-grad", "--quantizer", "bwn",
                    "--w-bits", "1", "--a-bits", "none", "--data", "digits", "--epochs", "1", "--max-steps", "3",
                    "--batch-size", "256", "--out", model["root"] / "fc.onnx", "--run-dir", run_dir)
    assert s["spec"]["a_bits"] is None and s["training"]["steps"] == 3
    check_parity(s)
    first = invoke_json("finetune", run_dir, "--epochs", "1", "--max-steps", "2", "--batch-size", "256",
                        "--checkpoint-every", "1")
    resumed = invoke_json("finetune", run_dir, "--epochs", "1", "--max-steps", "4", "--batch-size", "256", "--resume")
    assert first["training"]["steps"] == 2 and resumed["training"]["steps"] == 4
    steps = json.loads((run_dir / "history.json").read_text())["steps"]
    assert [(r["segment"], r["step"]) for r in steps] == [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6), (1, 7)]
    assert all("meta_gain" in r for r in steps)


def test_the_paper_form_of_multifc_on_bwn_freezes_codes_and_the_summary_says_why(model):
    s = invoke_json("compile", *model["args"], "--method", "metaquant", "--meta", "multifc", "--no-meta-bias",
                    "--quantizer", "bwn", "--w-bits", "1", "--a-bits", "none", "--optimizer", "sgd", "--data", "digits",
                    "--epochs", "1", "--batch-size", "512", "--out", model["root"] / "frozen.onnx",
                    "--run-dir", model["root"] / "run-frozen")
    assert [r["code_flip_rate"] for r in s["training"]["history"]] == [0.0]
    setup, frozen = s["warnings"]
    assert setup["message"].startswith("MultiFC in the paper's bias-free form on a sign-symmetric quantizer (BWN) "
                                       "cannot change a weight's sign")
    assert setup["hint"] == frozen["hint"] and "--no-meta-bias" in setup["hint"]
    assert frozen["message"].startswith("weight codes frozen: 0% of them changed in epoch 1")
    assert frozen["message"].endswith(f"Likely cause: {setup['message']}")
    assert s["training"]["history"][0]["warning"] == f"{frozen['message']}\nHow to fix: {frozen['hint']}"
