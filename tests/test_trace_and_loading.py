"""Front end: model specs, weights, tracing with leaf modules, and actionable trace failures."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from qcompile.errors import ModelLoadError, TraceFailure
from qcompile.loading import load_model, parse_shapes
from qcompile.passes.trace import trace

UNTRACEABLE = textwrap.dedent("""
    import torch
    from torch import nn

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.gate = Gate()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.gate(self.stem(x)).mean((2, 3)))

    def build():
        return Net()
""")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(UNTRACEABLE)
    return path


def test_untraceable_model_names_module_line_and_fix(model_file):
    model = load_model(f"{model_file}:build")
    with pytest.raises(TraceFailure) as err:
        trace(model)
    text = str(err.value)
    assert "'gate' (Gate)" in text
    assert f"{model_file}:11" in text and "if x.sum() > 0:" in text
    assert "--leaf gate" in err.value.hint


def test_leaf_module_makes_it_traceable(model_file):
    model = load_model(f"{model_file}:build")
    gm = trace(model, leaf_modules=["gate"])
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert targets == ["stem", "gate", "head"]  # gate opaque, its conv not visible
    x = torch.randn(2, 1, 6, 6)
    assert torch.equal(gm(x), model(x))
    assert trace(model, leaf_modules=["Gate"]) is not None  # class names work too
    with pytest.raises(TraceFailure, match="not found"):
        trace(model, leaf_modules=["nope"])


def test_load_model_specs_and_weights(model_file, tmp_path):
    m = load_model(f"{model_file}:build")
    torch.save(m.state_dict(), tmp_path / "w.pt")
    m2 = load_model(f"{model_file}:build", tmp_path / "w.pt")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    assert isinstance(load_model("torch.nn:Identity"), nn.Identity)
    with pytest.raises(ModelLoadError, match="no attribute"):
        load_model(f"{model_file}:nope")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("missing.py:build")
    with pytest.raises(ModelLoadError, match=":attr"):
        load_model("no_colon")
    torch.save({"stem.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="do not match"):
        load_model(f"{model_file}:build", tmp_path / "bad.pt")
    torch.save(m, tmp_path / "pickled.pt")  # a whole pickled model is refused (weights_only)
    with pytest.raises(ModelLoadError, match="state dict"):
        load_model(f"{model_file}:build", tmp_path / "pickled.pt")


def test_parse_shapes():
    assert parse_shapes("1,1,28,28") == [(1, 1, 28, 28)]
    assert parse_shapes("1,3,8,8; 1,4") == [(1, 3, 8, 8), (1, 4)]
    with pytest.raises(ModelLoadError, match="positive"):
        parse_shapes("1,0,2")
    with pytest.raises(ModelLoadError, match="comma"):
        parse_shapes("a,b")


@pytest.mark.parametrize("write, holds", [
    (lambda m, p: torch.save(m, p), "it holds pickled Python objects ("),
    (lambda m, p: torch.save({"w": np.zeros(3)}, p), "it holds pickled Python objects (numpy."),
    (lambda m, p: p.write_bytes(b"not torch" * 10), "it is not a file written by torch.save, or it is damaged"),
    (lambda m, p: (torch.save(m.state_dict(), p), p.write_bytes(p.read_bytes()[:200])),
     "it is not a file written by torch.save, or it is damaged"),
], ids=["whole-model", "numpy", "garbage", "truncated"])
def test_unreadable_weights_say_what_the_file_is_and_never_suggest_unsafe_loading(model_file, tmp_path, write, holds):
    path = tmp_path / "w.pt"
    write(load_model(f"{model_file}:build"), path)
    with pytest.raises(ModelLoadError) as err:
        load_model(f"{model_file}:build", path)
    text = str(err.value)
    assert err.value.message.startswith(f"cannot read {path} as a state dict: {holds}")
    assert err.value.hint == ("the weights file (--weights) must be a state dict of the model: save one with "
                              "torch.save(model.state_dict(), 'w.pt')")
    assert "weights_only" not in text and "safe_globals" not in text and "trust" not in text
    assert err.value.__cause__ is None  # torch's advice does not ride along in a chained traceback either


def test_unreadable_checkpoint_never_suggests_unsafe_loading(tmp_path):
    from qcompile.errors import ConfigError
    from qcompile.train import checkpoint_path, load_checkpoint

    torch.save({"format": 1, "model": nn.Linear(2, 2)}, checkpoint_path(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_checkpoint(checkpoint_path(tmp_path))
    assert "it holds pickled Python objects (torch.nn.modules.linear.Linear" in err.value.message
    assert "weights_only" not in str(err.value)
