"""The MetaQuant study's network: a small CIFAR-style ResNet for 28×28 digits (BatchNorm, option-B shortcuts).

    stem    conv3×3 1→C, BN, ReLU                       28×28
    block1  BasicBlock C→C                              28×28
    block2  BasicBlock C→2C, stride 2, 1×1-conv+BN down 14×14
    block3  BasicBlock 2C→4C, stride 2, 1×1-conv+BN down 7×7
    head    global average pool, Linear 4C→10

It is the paper's ResNet20 (Sec. 5.1) in miniature: every Conv/Linear is quantized by the
study, the 1×1 downsample convs and the final FC included; BN and the FC bias stay float. With the
default C = 8 it has 19,464 Conv/Linear weights, small enough for one CPU core per run.

    qcompile inspect benchmarks/metaquant_model.py:build --input-shape 1,1,28,28
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from resnet20 import BasicBlock  # noqa: E402  (the CIFAR ResNet block, defined once in the examples)


class SmallResNet(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 10):
        super().__init__()
        c = width
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.block1 = BasicBlock(c, c)
        self.block2 = BasicBlock(c, 2 * c, stride=2)
        self.block3 = BasicBlock(2 * c, 4 * c, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * c, num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def build(width: int = 8, num_classes: int = 10) -> nn.Module:
    return SmallResNet(width, num_classes)
