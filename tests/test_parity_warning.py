"""The export check warns when onnxruntime and PyTorch disagree by more than the parity tolerance, and says why."""

from __future__ import annotations

import warnings

import pytest

from qcompile.errors import QCompileWarning
from qcompile.parity import PARITY_TOLERANCE, warn_on_parity
from qcompile.plan import QuantPlan, QuantSpec, SitePlan


def plan(float_site: bool, a_bits: int | None = 8) -> QuantPlan:
    sites = [SitePlan("conv1", "conv2d", 4, a_bits, "uniform", True),
             SitePlan("conv2", "conv2d", None if float_site else 4, None if float_site else a_bits, "uniform", True,
                      reason="override conv2=0" if float_site else ""),
             SitePlan("fc", "linear", 4, a_bits, "uniform", True)]
    return QuantPlan(QuantSpec(w_bits=4, a_bits=a_bits), sites)


def test_within_tolerance_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_on_parity({"max_abs_diff": PARITY_TOLERANCE, "agreement": 1.0}, plan(float_site=True))
        warn_on_parity({"max_abs_diff": 0.0, "agreement": 1.0}, plan(float_site=False))
        warn_on_parity({"bpp": 0.5}, plan(float_site=True))  # a task without a logit gap
        # weights only: no code can flip, a gap is float rounding of (here: huge) logits
        warn_on_parity({"max_abs_diff": 3e-2, "agreement": 1.0}, plan(float_site=True, a_bits=None))


def test_a_float_layer_between_quantized_ones_is_named_as_the_cause():
    with pytest.warns(QCompileWarning, match=r"up to 5\.5e-03, more than 0\.0001 \(top-1 agreement 99\.95%\): "
                                             r"float layer\(s\) conv2 feed activation quantizers") as record:
        warn_on_parity({"max_abs_diff": 5.5e-3, "agreement": 0.9995}, plan(float_site=True))
    assert "--layer-bits NAME=0" in record[0].message.hint


def test_without_float_layers_the_warning_names_float_ops():
    with pytest.warns(QCompileWarning, match="a float op in front of an activation quantizer"):
        warn_on_parity({"max_abs_diff": 2e-3, "agreement": 1.0}, plan(float_site=False))


def test_cli_compile_warns_on_a_float_middle_layer_and_keeps_json_clean(tmp_path):
    import json
    import subprocess
    import sys

    from test_cli import MODEL_SOURCE

    (tmp_path / "net.py").write_text(MODEL_SOURCE)
    cmd = [sys.executable, "-m", "qcompile", "compile", "net.py:build", "--input-shape", "1,1,8,8", "--data", "digits",
           "--epochs", "0", "--out", "m.onnx", "--json"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert "differ from PyTorch eval" not in done.stderr
