"""``qcompile synthesize``: a pool, its preview and report from the command line; bad arguments exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from qcompile.cli.main import cli
from qcompile.synthesis import load_pool

MODEL_SOURCE = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 3))


def plain():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
'''


def invoke(*args, expect: int) -> dict:
    result = CliRunner().invoke(cli, ["synthesize", *map(str, args), "--json"])
    assert result.exit_code == expect, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("synth")
    (folder / "net.py").write_text(MODEL_SOURCE)
    namespace: dict = {}
    exec(MODEL_SOURCE, namespace)
    torch.manual_seed(0)
    net = namespace["build"]()
    torch.save(net.state_dict(), folder / "w.pt")
    return folder / "net.py", folder / "w.pt"


def base(model, out: Path, *extra) -> list:
    return [f"{model[0]}:build", "--weights", model[1], "--input-shape", "1,1,8,8", "--images", 6, "--batch-size", 4,
            "--steps", 3, "--out", out, "--device", "cpu", *extra]


def test_synthesize_writes_a_pool_a_preview_and_reports_it(model, tmp_path):
    doc = invoke(*base(model, tmp_path / "pool.npz", "--preview", tmp_path / "grid.png", "--norm", "mnist"), expect=0)
    assert doc["ok"] and doc["images"] == 6 and doc["hard"] == 3 and doc["easy"] == 3 and doc["batchnorms"] == 1
    assert doc["classifier"] == "4" and doc["normalization"]["mean"] == [0.1307]
    assert len(doc["batches"]) == 2 and doc["config"]["steps"] == 3
    pool = load_pool(tmp_path / "pool.npz")
    assert pool.images.shape == (6, 1, 8, 8) and pool.mean == pytest.approx((0.1307,))
    assert pool.provenance["model"].endswith("net.py:build")
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "pool.npz.partial.npz").exists()
    assert doc["pred_entropy_mean"] == pytest.approx(float(np.mean(pool.pred_entropy)), rel=1e-6)


@pytest.mark.parametrize("extra, fragment", [
    (("--images", 0), "--images must be at least 1"),
    (("--steps", 0), "--steps must be at least 1"),
    (("--group-size", 3), "group of 3 similar classes is impossible with 3 classes"),
    (("--eps-min", 0.4, "--eps-max", 0.2), "soft-label mass range"),
    (("--norm", "data"), "synthesis has none"),
    (("--mean", "0.5,0.5", "--std", "0.2,0.2"), "channel"),
    (("--resume",), "no synthesis checkpoint"),
    (("--device", "tpu"), "unknown device"),
    (("--device", "cuda:0") if not torch.cuda.is_available() else ("--steps", -1), "CUDA" if not torch.cuda.is_available() else "--steps"),
])
def test_bad_options_exit_2_with_a_fix(model, tmp_path, extra, fragment):
    doc = invoke(*base(model, tmp_path / "pool.npz"), *map(str, extra), expect=2)
    assert fragment in doc["error"]["message"] and doc["error"]["hint"]
    assert not (tmp_path / "pool.npz").exists()


def test_bad_files_and_models_exit_2(model, tmp_path):
    assert "does not end in .npz" in invoke(*base(model, tmp_path / "pool.txt"), expect=2)["error"]["message"]
    shape = base(model, tmp_path / "p.npz")
    shape[shape.index("1,1,8,8")] = "1,64"
    assert "synthesis makes images" in invoke(*shape, expect=2)["error"]["message"]
    doc = invoke(*base(model, tmp_path / "p.npz", "--preview", tmp_path / "grid.jpg"), expect=2)
    assert "does not end in .png" in doc["error"]["message"]
    args = base(model, tmp_path / "p.npz")
    args[0] = f"{model[0]}:plain"
    args[1:3] = []
    assert "no BatchNorm" in invoke(*args, expect=2)["error"]["message"]
    (tmp_path / "p.npz.partial.npz").write_bytes(b"x")
    doc = invoke(*base(model, tmp_path / "p.npz"), expect=2)
    assert "unfinished synthesis" in doc["error"]["message"] and "--resume" in doc["error"]["hint"]
    doc = invoke(*base(model, tmp_path / "p.npz", "--resume"), expect=2)
    assert "not a readable synthesis checkpoint" in doc["error"]["message"]


def test_help_lists_the_recipe_options():
    result = CliRunner().invoke(cli, ["synthesize", "--help"])
    assert result.exit_code == 0
    for flag in ("--images", "--preview", "--similarity", "--group-size", "--hard-fraction", "--resume", "--json"):
        assert flag in result.stdout
