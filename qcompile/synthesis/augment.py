"""Augmentation inside the synthesis loop: random resized crops (shifts and zooms) and horizontal flips.

The IntraQ/HAST recipe: at each step, with probability ``p``, the whole batch is seen through a random
crop covering ``scale`` of the image area (aspect kept, position uniform), resized back, and flipped
left–right with probability ½ per image. Images must then satisfy the BN and label losses from many
views, which makes them less adversarial. The warp is a differentiable affine resampling
(``grid_sample``), so gradients reach every pixel of the image being optimised. ``flip=False`` is for
data whose class changes when mirrored (the recipe mirrors by default, digits included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qcompile.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    p: float = 0.5                    # probability that a step is augmented
    scale: tuple[float, float] = (0.4, 1.0)  # crop area as a share of the image
    flip: bool = True

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"augmentation probability {self.p} is not in [0, 1]", hint="give a value in [0, 1]")
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"crop scale range {self.scale} is invalid", hint="need 0 < low <= high <= 1")


def random_view(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, H, W) seen through one random crop-and-flip per image (or unchanged, with prob 1 − p).

    Draws from ``generator`` (on the CPU) whether or not the step is augmented, so a run's random stream
    does not depend on the outcome."""
    n = x.shape[0]
    draw = torch.rand(1 + 4 * n, generator=generator)
    if x.dim() != 4 or draw[0] >= config.p:
        return x
    lo, hi = config.scale
    area = lo + (hi - lo) * draw[1:1 + n]
    side = area.sqrt()                      # crop side as a share of the image side
    cx = (2 * draw[1 + n:1 + 2 * n] - 1) * (1 - side)  # centre in [-1 + side, 1 - side]
    cy = (2 * draw[1 + 2 * n:1 + 3 * n] - 1) * (1 - side)
    flip = torch.where((draw[1 + 3 * n:] < 0.5) & config.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = side
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
