"""The bit selector: a small float branch on the input image that picks each dynamic layer's width.

Why on the input: the runtime can then run it alone, group a batch by the configuration it picks and
run each group's quantized graph (no half-run backbone to split). Its features do not depend on the
number of channels or the image size, so one design serves any image classifier:

- the channel-mean image resized to 8×8 (bilinear; 64 values: where the ink is),
- the channel-mean image's standard deviation and its mean absolute horizontal + vertical gradient
  (CADyQ's image-complexity cue; 2 values),

then Linear(66 → hidden) → ReLU → Linear(hidden → L·K): for each of L dynamic layers, logits over the
K candidate widths. The two Linear weights run at 8 bits (symmetric per output row, 255 levels;
straight-through in training) so the exported selector stores them as int8 (:class:`Int8Linear`): a
float selector was ~20 % of a small model's file. Activations stay float. Training draws a hard Gumbel-softmax sample (one-hot forward, the soft sample's
gradient backward: straight-through); evaluation takes the arg-max, so inference is deterministic.
The last layer starts at zero: every width equally likely at first, the lowest chosen by arg-max.
``chosen`` counts, per layer and width, the images of the evaluations since the last training step
(what a static fallback export uses: each layer at its most frequent width).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qcompile.errors import ConfigError

GRID = 8
FEATURES = GRID * GRID + 2
WEIGHT_LEVELS = 127  # codes in [-127, 127]


def int8_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer codes as float, per-row scale) of ``w``: codes · scale is the weight the selector uses."""
    scale = w.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / WEIGHT_LEVELS
    return torch.clamp(torch.round(w.detach() / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS), scale


def quantized_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer`` with its weight at 8 bits (the exported :class:`Int8Linear` computes the same)."""
    if not isinstance(layer, nn.Linear):
        return layer(x)
    codes, scale = int8_weight(layer.weight)
    w = codes * scale
    if layer.training:
        w = layer.weight + (w - layer.weight).detach()
    return F.linear(x, w, layer.bias)


class Int8Linear(nn.Module):
    """The export form of a selector Linear: its codes through the packed-weight export path (an INT8
    initializer and DequantizeLinear with the row scales, folded at load), the bias in float."""

    def __init__(self, layer: nn.Linear):
        from qcompile.export.frozen_ops import FrozenQuantizedOp
        from qcompile.quantizers.codes import QuantCodes

        super().__init__()
        codes, scale = int8_weight(layer.weight)
        rows = codes.shape[0]
        packed = QuantCodes(codes=codes.to(torch.int64), scale=scale.reshape(rows).to(torch.float32),
                            zero_point=torch.zeros(rows, dtype=torch.int64), bits=8, signed=True, axis=0)
        self.weights = FrozenQuantizedOp(packed, scale.reshape(rows), layer.bias)
        self.weights.float_type = nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights
        return F.linear(x, w.decode_weight(w.output_scale), w.bias)


def image_features(x: torch.Tensor) -> torch.Tensor:
    """(N, 66) channel- and size-independent features of images (N, C, H, W)."""
    if x.dim() != 4:
        raise ConfigError(f"the bit selector reads images (N, C, H, W), got an input of shape {tuple(x.shape)}",
                          hint="use --method dynadfq with several --bits on an image classifier, or one --bits width")
    gray = x.mean(dim=1, keepdim=True)
    grid = F.interpolate(gray, size=(GRID, GRID), mode="bilinear", align_corners=False).flatten(1)
    spread = gray.flatten(1).std(dim=1, keepdim=True)
    gx = (gray[..., :, 1:] - gray[..., :, :-1]).abs().flatten(1).mean(dim=1, keepdim=True)
    gy = (gray[..., 1:, :] - gray[..., :-1, :]).abs().flatten(1).mean(dim=1, keepdim=True)
    return torch.cat([grid, spread, gx + gy], dim=1)


class BitSelector(nn.Module):
    """Images → one-hot width choices (N, layers, candidates). ``last_choices`` keeps the latest ones
    (with their gradient in training) for the BitOPs regulariser; ``chosen`` counts eval choices."""

    def __init__(self, layers: int, candidates: Sequence[int], hidden: int = 32, tau: float = 1.0):
        super().__init__()
        self.layers, self.candidates, self.tau = int(layers), tuple(candidates), float(tau)
        self.hidden = nn.Linear(FEATURES, hidden)
        self.out = nn.Linear(hidden, self.layers * len(self.candidates))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("chosen", torch.zeros(self.layers, len(self.candidates), dtype=torch.int64))
        self.last_choices: torch.Tensor | None = None

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image of the two Linear layers (the resize and statistics are not MACs)."""
        return self.hidden.in_features * self.hidden.out_features + self.out.in_features * self.out.out_features

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(quantized_linear(self.hidden, image_features(x)))
        return quantized_linear(self.out, h).view(x.shape[0], self.layers, len(self.candidates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        if self.training:
            choices = F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1)
            self.chosen.zero_()
        else:
            choices = F.one_hot(logits.argmax(dim=-1), len(self.candidates)).to(logits.dtype)
            self.chosen += choices.detach().sum(dim=0).to(torch.int64)
        self.last_choices = choices
        return choices

    def most_frequent(self) -> list[int]:
        """Per layer, the width chosen most often by the counted evaluations (the widest if none)."""
        if int(self.chosen.sum()) == 0:
            return [self.candidates[-1]] * self.layers
        return [self.candidates[int(k)] for k in self.chosen.argmax(dim=1)]

    def extra_repr(self) -> str:
        return f"layers={self.layers}, candidates={list(self.candidates)}, tau={self.tau}"


class DynamicOp(nn.Module):
    """A multi-width quantized op whose weights and input run at the width chosen for each image.

    Training (or whenever the choices carry a gradient): every candidate width's output, mixed per
    image by the one-hot choice, so the straight-through gradient reaches the selector. Otherwise each
    width runs only on the images that chose it (the result is the same). ``macs`` (per image) is
    measured on the first forward."""

    def __init__(self, op: nn.Module, index: int, candidates: Sequence[int]):
        super().__init__()
        self.op, self.index, self.candidates = op, int(index), tuple(candidates)
        self.register_buffer("macs", torch.zeros((), dtype=torch.int64))

    def use_width(self, bits: int) -> None:
        self.op.weight_quantizer.set_bits(bits)
        if hasattr(self.op.input_quantizer, "set_bits"):
            self.op.input_quantizer.set_bits(bits)

    def forward(self, x: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
        mask = choices[:, self.index]
        if self.training or mask.requires_grad:
            y = None
            for k, bits in enumerate(self.candidates):
                self.use_width(bits)
                out = self.op(x)
                term = out * mask[:, k].view(-1, *([1] * (out.dim() - 1)))
                y = term if y is None else y + term
        else:
            y = None
            for k, bits in enumerate(self.candidates):
                rows = mask[:, k] > 0
                if not bool(rows.any()):
                    continue
                self.use_width(bits)
                out = self.op(x[rows])
                if y is None:
                    y = out.new_zeros((x.shape[0], *out.shape[1:]))
                y[rows] = out
        if int(self.macs) == 0:
            self.macs.fill_(y[0].numel() * self.op.weight[0].numel())
        return y

    def extra_repr(self) -> str:
        return f"index={self.index}, candidates={list(self.candidates)}"
