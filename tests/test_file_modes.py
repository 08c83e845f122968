"""Files qcompile writes get the permissions of an ordinary write: ``0666 & ~umask`` when new, and the
mode of the file they replace otherwise — never the 0600 of a private temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from qcompile.atomic import atomic_write, atomic_write_text
from qcompile.cli.main import cli

MODEL_SOURCE = '''
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
'''


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; the previous one is restored after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_a_new_file_gets_0666_minus_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert mode(tmp_path / "a.json") == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary file left


@pytest.mark.parametrize("existing", [0o644, 0o600, 0o640, 0o664], ids=oct)
def test_replacing_a_file_keeps_its_mode(tmp_path, umask, existing):
    umask(0o077)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    path.chmod(existing)
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and mode(path) == existing


def test_a_failed_write_leaves_the_old_file_and_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    path.chmod(0o640)

    def failing(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old" and mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("mask", [0o022, 0o077], ids=oct)
def test_every_file_of_a_compile_and_a_re_export_respects_the_umask(tmp_path, umask, mask):
    umask(mask)
    (tmp_path / "net.py").write_text(MODEL_SOURCE)
    out, run_dir = tmp_path / "m.onnx", tmp_path / "run"
    result = CliRunner().invoke(cli, ["compile", f"{tmp_path / 'net.py'}:build", "--input-shape", "1,1,8,8",
                                      "--max-steps", "2", "--checkpoint-every", "1", "--out", str(out),
                                      "--float-out", str(tmp_path / "fp32.onnx"), "--run-dir", str(run_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    written = [out, tmp_path / "fp32.onnx", run_dir / "qmodel.pt", run_dir / "plan.json", run_dir / "history.json",
               run_dir / "checkpoints" / "checkpoint.pt"]
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(0o666 & ~mask) for p in written}
    out.chmod(0o604)  # shared on purpose: re-exporting over it must not change that
    result = CliRunner().invoke(cli, ["export", str(run_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    assert mode(out) == 0o604
