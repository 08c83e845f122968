"""Bjøntegaard delta rate: the average bit-rate difference of two rate–distortion curves at equal quality.

VCEG-M33 (Bjøntegaard, 2001): fit log(rate) as a cubic polynomial of PSNR for each curve, integrate
both over the PSNR interval the curves share, and report exp(mean difference) − 1 in percent. Negative
means the test curve needs fewer bits than the anchor for the same PSNR. A curve of three points gets
a quadratic (a cubic through three points is not determined); with two, a line. Outside the overlap
nothing is extrapolated: no overlap gives ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Curve = Sequence[tuple[float, float]]  # (bpp, PSNR dB) points


def pareto(points: Curve) -> list[tuple[float, float]]:
    """The points no other point of the curve dominates (as many or fewer bits and as high or higher PSNR):
    the operating points an encoder would use. An under-trained high-λ model can fall below a lower one."""
    pts = [(float(r), float(q)) for r, q in points]
    return sorted(p for p in pts if not any(o != p and o[0] <= p[0] and o[1] >= p[1] for o in pts))


def _fit(points: Curve) -> tuple[np.poly1d, float, float, int]:
    pts = [(r, q) for r, q in points if r > 0 and math.isfinite(q)]
    if len(pts) < 2:
        raise ValueError(f"a rate–distortion curve needs at least 2 points with positive rate, got {len(pts)}")
    rate, quality = np.log(np.array([p[0] for p in pts])), np.array([p[1] for p in pts])
    degree = min(3, len(pts) - 1)
    return np.poly1d(np.polyfit(quality, rate, degree)), float(quality.min()), float(quality.max()), degree


def bd_rate(anchor: Curve, test: Curve) -> dict[str, float | int | None]:
    """``{"bd_rate_pct", "psnr_low", "psnr_high", "degree"}`` of ``test`` against ``anchor``; the percentage is
    ``None`` when the curves' PSNR ranges do not overlap."""
    fa, lo_a, hi_a, da = _fit(anchor)
    ft, lo_t, hi_t, dt = _fit(test)
    lo, hi = max(lo_a, lo_t), min(hi_a, hi_t)
    result = {"psnr_low": lo, "psnr_high": hi, "degree": min(da, dt), "bd_rate_pct": None}
    if hi <= lo:
        return result
    ia, it = np.polyint(fa), np.polyint(ft)
    mean_diff = ((it(hi) - it(lo)) - (ia(hi) - ia(lo))) / (hi - lo)
    result["bd_rate_pct"] = float((math.exp(mean_diff) - 1) * 100)
    return result
