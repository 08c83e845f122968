"""Shared fixtures: tiny models and the path of the real data beside the checkout."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class TinyBNNet(nn.Module):
    """conv-BN-ReLU ×2 → GAP → linear, for 1×8×8 inputs (scikit-learn digits sized)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


DIGITS_CNN = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build():
    return Net()
'''


def digits_cnn_file(root: Path, name: str = "net", extra: str = "") -> tuple[Path, Path]:
    """A model file as a user passes it to the command line: a small conv-BN CNN for 1×8×8 digits
    (``build``, plus the factories in ``extra``) in ``root/<name>.py``, and its seed-0 state dict in
    ``root/<name>-w.pt``."""
    path = root / f"{name}.py"
    path.write_text(DIGITS_CNN + extra)
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    torch.manual_seed(0)
    weights = root / f"{name}-w.pt"
    torch.save(namespace["build"]().state_dict(), weights)
    return path, weights


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = TinyBNNet()
    # non-trivial BN statistics so folding is actually exercised
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (CI provides ../shared beside the checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread, and two threads thrash on a loaded 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


IMPORT_BLOCKER = """
import importlib.abc, sys

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, _Block())
"""


@pytest.fixture
def python_without() -> Callable[..., subprocess.CompletedProcess]:
    """``run(script, *args, blocked=("torch", "onnx"))``: ``script`` in a fresh interpreter in which importing
    any of the ``blocked`` top-level packages fails — how the torch-free parts are proven torch-free."""

    def run(script: str, *args: object, blocked: Sequence[str] = ("torch", "onnx")) -> subprocess.CompletedProcess:
        source = IMPORT_BLOCKER.format(blocked=tuple(blocked)) + script
        return subprocess.run([sys.executable, "-c", source, *map(str, args)], capture_output=True, text=True)

    return run
