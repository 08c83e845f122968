"""Distortion of 8-bit RGB images: PSNR and MS-SSIM, in numpy.

PSNR is over all three channels (MSE of the 8-bit values, peak 255). MS-SSIM follows Wang, Simoncelli
& Bovik (2003) as CompressAI and ``pytorch_msssim`` compute it: an 11-tap Gaussian window (σ = 1.5),
"valid" filtering, K1 = 0.01, K2 = 0.03, five scales with weights (0.0448, 0.2856, 0.3001, 0.2363,
0.1333), 2×2 average pooling between scales, contrast-structure terms of the first four scales times
the luminance-contrast-structure (SSIM) of the last, per channel, averaged over RGB. The window is
separable, so a Kodak image costs about 0.2 s of CPU; images under 161 pixels on a side
(too small for five scales) get ``None``.
"""

from __future__ import annotations

import math

import numpy as np

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
WINDOW, SIGMA, K1, K2, PEAK = 11, 1.5, 0.01, 0.03, 255.0
MIN_SIDE = (WINDOW - 1) * 2 ** (len(WEIGHTS) - 1) + 1  # 161: the last scale still holds one window


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of one shape (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(PEAK ** 2 / mse)


def _gaussian() -> np.ndarray:
    x = np.arange(WINDOW) - WINDOW // 2
    g = np.exp(-(x ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


def _filter(x: np.ndarray) -> np.ndarray:
    """Separable "valid" Gaussian filter over the last two axes."""
    g = _gaussian()
    h = x.shape[-2] - WINDOW + 1
    rows = sum(g[i] * x[..., i:i + h, :] for i in range(WINDOW))
    w = x.shape[-1] - WINDOW + 1
    return sum(g[i] * rows[..., i:i + w] for i in range(WINDOW))


def ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SSIM, contrast-structure) per channel of float64 C×H×W images in 0..255."""
    c1, c2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
    mx, my = _filter(x), _filter(y)
    sxx, syy, sxy = _filter(x * x) - mx ** 2, _filter(y * y) - my ** 2, _filter(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1)
    return (lum * cs).mean(axis=(-2, -1)), cs.mean(axis=(-2, -1))


def _pool(x: np.ndarray) -> np.ndarray:
    """2×2 average pooling; an odd side is padded by one zero row/column first, as ``avg_pool2d(padding=s % 2)``
    with ``count_include_pad`` does in the reference implementations."""
    h, w = x.shape[-2:]
    x = np.pad(x, ((0, 0), (h % 2, h % 2), (w % 2, w % 2)))[:, : h + h % 2, : w + w % 2] if h % 2 or w % 2 else x
    h, w = x.shape[-2:]
    return x[:, : h - h % 2, : w - w % 2].reshape(x.shape[0], h // 2, 2, w // 2, 2).mean(axis=(2, 4))


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """MS-SSIM of two uint8 H×W×3 images, or None when a side is under :data:`MIN_SIDE` pixels."""
    if min(a.shape[:2]) < MIN_SIDE:
        return None
    x = a.astype(np.float64).transpose(2, 0, 1)
    y = b.astype(np.float64).transpose(2, 0, 1)
    factors = []
    for scale in range(len(WEIGHTS)):
        ssim, cs = ssim_terms(x, y)
        factors.append(np.maximum(ssim if scale == len(WEIGHTS) - 1 else cs, 0))
        if scale < len(WEIGHTS) - 1:
            x, y = _pool(x), _pool(y)
    per_channel = np.prod(np.stack(factors) ** WEIGHTS[:, None], axis=0)
    return float(per_channel.mean())
