"""A small transformer encoder that reads a 28×28 digit as a sequence of 28 rows (Linear-heavy: 1.78M Linear weights).

    python examples/train_float.py examples/tiny_transformer.py:build --data mnist:../shared/data/mnist --out tf.pt
    qcompile compile examples/tiny_transformer.py:build --weights tf.pt --input-shape 1,1,28,28 \\
        --data mnist:../shared/data/mnist --w-bits 4 --a-bits none --group-size 32 --out tf-w4g32.onnx

Each block is pre-LayerNorm self-attention then a GELU MLP (4× wider), with ``batch_first`` tensors
[batch, tokens, features]. Attention is written from ``nn.Linear`` (one fused q/k/v projection and an
output projection) so that torch.fx traces it and every projection is a quantizable Linear: with
``--group-size`` each one runs as onnxruntime's MatMulNBits.

``build_torch_layers`` is the same model from ``nn.TransformerEncoderLayer``. Its forward branches on
tensor properties to choose the fused fast path (``torch._transformer_encoder_layer_fwd``), which
torch.fx cannot trace: ``qcompile`` then names the layer and the fix, ``--leaf TransformerEncoderLayer``,
which keeps each encoder layer opaque and in float, so only the embedding and the classifier get
quantized. Prefer ``build`` for quantization.
"""

from __future__ import annotations

import torch
from torch import nn

ROWS = COLS = 28


class SelfAttention(nn.Module):
    """Multi-head self-attention from two Linear layers (qkv, proj); softmax in float."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)  # [3, B, H, T, d]
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attention @ v).transpose(1, 2).flatten(2))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RowTransformer(nn.Module):
    """[B, 1, 28, 28] images → 28 row tokens → encoder blocks → mean over tokens → class logits."""

    def __init__(self, dim: int, depth: int, heads: int, num_classes: int, encoder: nn.Module | None = None):
        super().__init__()
        self.embed = nn.Linear(COLS, dim)
        self.position = nn.Parameter(torch.zeros(1, ROWS, dim))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = encoder or nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1, 2)) + self.position  # [B, 28, 28]: one token per image row
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def build(num_classes: int = 10, dim: int = 192, depth: int = 4, heads: int = 4) -> nn.Module:
    return RowTransformer(dim, depth, heads, num_classes)


def build_torch_layers(num_classes: int = 10, dim: int = 192, depth: int = 4, heads: int = 4) -> nn.Module:
    """The same shape of model from ``nn.TransformerEncoderLayer`` (see the module docstring)."""
    layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    return RowTransformer(dim, depth, heads, num_classes, encoder)
