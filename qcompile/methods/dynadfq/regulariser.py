"""Per-image BitOPs of a model with a bit selector, and the regulariser that pulls their mean to a target.

    BitOPs(x) = Σ_l MACs_l · b_l(x)² + MACs_sel · 32²

over the dynamic layers l (weights and input at the width b_l(x) the selector chose for image x, so
b^w·b^a = b²; a layer whose input stays float counts b·32) plus the selector itself, a float branch
run on every image. The target is written as an *equivalent width* T: the BitOPs of the same layers all
at W_T A_T, selector included (T = 3 is the cost of static W3A3; fractional T lies between). The
regulariser is DQNet's one-sided hinge on the batch mean,

    L_bit = λ · max(0, mean_x BitOPs(x) / BitOPs_T − 1),

differentiable in the choices through the Gumbel straight-through estimator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from qcompile.methods.dynadfq.cost import FLOAT_BITS
from qcompile.methods.dynadfq.selector import BitSelector, DynamicOp


def dynamic_parts(model: nn.Module) -> tuple[BitSelector, list[DynamicOp]]:
    selectors = [m for m in model.modules() if isinstance(m, BitSelector)]
    if len(selectors) != 1:
        raise ValueError(f"expected one bit selector in the model, found {len(selectors)}")
    ops = sorted((m for m in model.modules() if isinstance(m, DynamicOp)), key=lambda m: m.index)
    return selectors[0], ops


def _bits_product(op: DynamicOp, candidates: Sequence[int]) -> torch.Tensor:
    """b_w·b_a per candidate (the input width follows the weights' unless the input is float)."""
    float_input = op.op.input_quantizer is None
    return torch.tensor([b * (FLOAT_BITS if float_input else b) for b in candidates], dtype=torch.float64)


def image_bitops(model: nn.Module, choices: torch.Tensor | None = None) -> torch.Tensor:
    """BitOPs per image (N,) for ``choices`` (N, L, K; default: the selector's latest), differentiable."""
    selector, ops = dynamic_parts(model)
    choices = selector.last_choices if choices is None else choices
    total = choices.new_full((choices.shape[0],), float(selector.macs * FLOAT_BITS * FLOAT_BITS))
    for op in ops:
        prices = (_bits_product(op, op.candidates) * float(op.macs)).to(choices)
        total = total + choices[:, op.index] @ prices
    return total


def target_bitops(model: nn.Module, width: float) -> float:
    """BitOPs of the dynamic layers all at W_T A_T (T = ``width``), plus the selector's."""
    selector, ops = dynamic_parts(model)
    layers = sum(float(op.macs) * width * (FLOAT_BITS if op.op.input_quantizer is None else width) for op in ops)
    return layers + selector.macs * FLOAT_BITS * FLOAT_BITS


def bit_loss(bitops: torch.Tensor, target: float, weight: float) -> torch.Tensor:
    return weight * torch.relu(bitops.mean() / target - 1.0)
