"""The codec task: reconstruct the input image at a low rate, loss R + λ·D.

R is the rate in bits per pixel, −Σ log₂ likelihoods / (N·H·W), from the likelihoods the
quantization node returns (:mod:`qcompile.codec.bottleneck`); D is the MSE on the 0–255 scale,
λ·255²·MSE as CompressAI writes it, so λ values are comparable with theirs (0.0018 … 0.0483).
Inputs are uint8 images (or floats in [0, 1]); the targets are the images themselves.
Metrics: ``bpp``, ``mse`` (on [0, 1]) and ``psnr`` (dB, 8-bit peak); the headline is the loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from qcompile.errors import ConfigError
from qcompile.tasks.base import Task


def _images(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


class Codec(Task):
    """Outputs ``(reconstruction, likelihoods)``; targets: the images in [0, 1]."""

    name = "codec"
    metrics = ("bpp", "mse", "psnr")
    headline = "loss"

    def __init__(self, lmbda: float = 0.01):
        if isinstance(lmbda, bool) or not isinstance(lmbda, (int, float)) or not (0 < lmbda < math.inf):
            raise ConfigError(f"lambda must be a positive number, got {lmbda!r}",
                              hint="use e.g. --lambda 0.0067 (CompressAI's range for MSE is 0.0018 to 0.0483)")
        self.lmbda = float(lmbda)

    def batch(self, x, y, device, mean, std):
        images = _images(x).to(device)
        return images, images

    def targets(self, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        return _images(x)

    def parts(self, outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: (bits, mse on [0, 1], pixels)."""
        x_hat, likelihoods = outputs
        n = targets.shape[0]
        bits = -torch.log2(likelihoods).reshape(n, -1).sum(dim=1)
        mse = ((x_hat - targets) ** 2).reshape(n, -1).mean(dim=1)
        pixels = torch.tensor(float(targets.shape[-2] * targets.shape[-1]), device=targets.device)
        return bits, mse, pixels

    def loss(self, outputs: Any, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        bits, mse, pixels = self.parts(outputs, targets)
        return bits.mean() / pixels + self.lmbda * 255.0 ** 2 * mse.mean()

    def _per_image(self, outputs: Any, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        bits, mse, pixels = self.parts(outputs, targets)
        bpp = bits / pixels
        psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-12))
        return {"loss": bpp + self.lmbda * 255.0 ** 2 * mse, "bpp": bpp, "mse": mse, "psnr": psnr}

    def batch_metrics(self, outputs: Any, targets: torch.Tensor) -> dict[str, float]:
        per = self._per_image(outputs, targets)
        return {k: float(per[k].mean()) for k in self.metrics}

    def evaluation_sums(self, outputs: Any, targets: torch.Tensor) -> dict[str, float]:
        return {k: float(v.sum()) for k, v in self._per_image(outputs, targets).items()}
