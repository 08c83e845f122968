"""The shared-seed dither on torch tensors: the runtime's algorithm (:mod:`qcompile.runtime.dither`),
run on int64 tensors of any device.

The Philox rounds and the offset mapping are the runtime's own functions (written with operators
only), so the offsets PyTorch trains and evaluates with are, bit for bit, the ones the torch-free
runtime regenerates when it decodes an exported model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qcompile.runtime.dither import PRNG, PRNG_VERSION, check_levels, numerators_from_stream, stream_from_index

__all__ = ["PRNG", "PRNG_VERSION", "dither_numerators", "dither_offsets", "node_id"]


def node_id(layer: str, role: str) -> str:
    """The stable id of a quantizer node: qualified layer name and role ('conv1', 'weight' → 'conv1:weight')."""
    return f"{layer}:{role}"


def dither_numerators(seed: int, node: str, shape: Sequence[int], levels: int = 0,
                      device: torch.device | str | None = None) -> tuple[torch.Tensor, int]:
    """(int64 numerators of ``shape``, denominator) of node ``node``'s offsets, computed on ``device``."""
    count = 1
    for n in shape:
        count *= int(n)
    index = torch.arange(count, dtype=torch.int64, device=device)
    numerators, denominator = numerators_from_stream(stream_from_index(index, seed, node), check_levels(levels))
    return numerators.reshape(tuple(int(n) for n in shape)), denominator


def dither_offsets(seed: int, node: str, shape: Sequence[int], levels: int = 0,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The float32 offsets u ∈ (−½, ½) of node ``node``, of ``shape``: equal to
    :func:`qcompile.runtime.dither.dither_offsets` bit for bit."""
    numerators, denominator = dither_numerators(seed, node, shape, levels, device)
    return numerators.to(torch.float32) / float(denominator)
