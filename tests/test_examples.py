"""The example models are what their docstrings say (the size benchmark's goals are stated for them)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from qcompile.loading import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_resnet20_is_the_standard_cifar_resnet20():
    model = load_model(f"{ROOT / 'examples' / 'resnet20.py'}:build")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sum(m.weight.numel() for m in layers) == 270_896
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21  # after every conv
    shortcuts = [m for m in layers if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in shortcuts] == [(16, 32, (2, 2)), (32, 64, (2, 2))]
    assert len(layers) == 1 + 18 + 2 + 1  # stem, 3 stages x 3 blocks x 2 convs, 2 downsample shortcuts, fc
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
