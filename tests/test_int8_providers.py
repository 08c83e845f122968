"""Where an ``ort-int8`` file runs: the CPU provider under ``providers="auto"`` even where CUDA is available
(onnxruntime has no CUDA QLinearConv, and parity was checked on x86 CPUs only); an explicit CUDA request,
or a CPU that is not x86, runs with an :class:`UncheckedWarning`. ``exact`` files are unaffected."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import TinyBNNet
from qcompile.api import compile as qcompile_compile
from qcompile.runtime import Session, UncheckedWarning
from qcompile.runtime.engine import CPU, CUDA, Engine

X = np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An ort-int8 and an exact export of the same tiny model, calibrated on random images."""
    from qcompile.data import ArrayDataset, DatasetSplits

    root = tmp_path_factory.mktemp("providers")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (128, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 128).astype(np.int64)
    train = ArrayDataset(x, y)
    splits = DatasetSplits("random", train, train, [str(i) for i in range(10)], (0.5,), (0.25,))
    paths = {}
    for target in ("ort-int8", "exact"):
        torch.manual_seed(0)
        cm = qcompile_compile(TinyBNNet(), input_shape=(1, 1, 8, 8), data=splits, bn_reestimate_batches=4,
                              target=target)
        paths[target] = root / f"{target}.onnx"
        cm.export(paths[target])
    return paths


@pytest.fixture
def cuda_available(monkeypatch):
    """This onnxruntime says it has CUDA (the sessions themselves are built on the CPU wheel's providers)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


def test_auto_runs_ort_int8_on_the_cpu_even_with_cuda(files, cuda_available):
    engine = Engine.create("auto")
    assert engine.providers == (CUDA, CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncheckedWarning)
        assert engine.providers_for(integer_kernels=True) == (CPU,)
        assert engine.providers_for(integer_kernels=False) == (CUDA, CPU)  # exact files: CUDA first, as before
        session = Session(files["ort-int8"])
    assert session.providers == [CPU]
    assert session.run(X).shape == (4, 10)


def test_explicit_cuda_for_ort_int8_warns_that_parity_is_unverified(files, cuda_available):
    engine = Engine.create("cuda")
    with pytest.warns(UncheckedWarning, match="CUDA provider: its parity with PyTorch is unverified"):
        assert engine.providers_for(integer_kernels=True) == (CUDA,)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncheckedWarning)
        assert engine.providers_for(integer_kernels=False) == (CUDA,)
        Engine.create(["cpu"]).providers_for(integer_kernels=True)


def test_ort_int8_on_a_cpu_that_is_not_x86_warns(files, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.warns(UncheckedWarning, match="aarch64") as caught:
        Session(files["ort-int8"]).run(X)
    assert "fixed-point" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncheckedWarning)
        Session(files["exact"]).run(X)


def test_the_command_line_shows_the_warning(files, monkeypatch):
    """``qcompile bench`` on an ort-int8 file on arm64 prints "Warning: ..." and lists it in --json."""
    import json

    from click.testing import CliRunner

    from qcompile.cli.main import cli

    monkeypatch.setattr("platform.machine", lambda: "arm64")
    result = CliRunner().invoke(cli, ["bench", str(files["ort-int8"]), "--batch-sizes", "1", "--repeats", "2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert any("arm64" in w["message"] for w in json.loads(result.stdout)["warnings"])
