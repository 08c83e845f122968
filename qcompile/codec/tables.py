"""Quantized CDF tables for the range coder, built ONCE from the learned density and shipped.

Encoder and decoder must use the very same integers (a float recomputed on each side may differ in
the last bit and derail decoding), so the tables are computed here, in float64, and stored in the
bundle (the contract: ``qcompile.runtime.codec.spec``):

* rounding: one table per channel c, the probabilities ``c(k + ½) − c(k − ½)`` of integers k;
* universal: one table per channel and dither level (t = c·L + j), ``c(k + u_j + ½) − c(k + u_j − ½)``
  with ``u_j = (2j + 1 − L) / (2L)``: the probability of k given the shared offset.

Each table covers the integers whose probability is not in the tails (``tail_mass`` per side, under
every offset), plus one overflow symbol carrying the tails' mass; every symbol gets at least one count
of ``2**precision``, so any k can be coded (out-of-range ones through the overflow escape).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from qcompile.codec.entropy import FactorizedDensity

PRECISION = 16
TAIL_MASS = 1e-9
MAX_SYMBOLS = 4096  # a channel's range is cut to this many integers; the rest goes through the escape
_SEARCH = 1 << 14  # integers searched on each side of 0 for a channel's range


@dataclass(frozen=True)
class CdfTables:
    """The contract's ``cdf`` [T, S_max + 1], ``cdf_length`` [T] and ``cdf_offset`` [T] (int32)."""

    cdf: np.ndarray
    cdf_length: np.ndarray
    cdf_offset: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"cdf": self.cdf, "cdf_length": self.cdf_length, "cdf_offset": self.cdf_offset}


def dither_centres(levels: int) -> np.ndarray:
    """u_j = (2j + 1 − L) / (2L), j = 0 … L−1 (the runtime's discretised dither)."""
    j = np.arange(levels, dtype=np.float64)
    return (2 * j + 1 - levels) / (2 * levels)


def channel_ranges(density: FactorizedDensity, tail_mass: float = TAIL_MASS) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) integer per channel whose probability under any offset u ∈ (−½, ½) is not
    inside the tails: c(k + 1) > tail_mass and 1 − c(k − 1) > tail_mass, in float64."""
    grid = torch.arange(-_SEARCH, _SEARCH + 1, dtype=torch.float64)
    cdf = _float64(density).cdf(grid.expand(density.channels, -1)).numpy()
    low_ok = cdf > tail_mass  # c(k) > tail: k + 1 ≥ this k works as the "c(k + 1)" test one step left
    high_ok = (1.0 - cdf) > tail_mass
    ks = grid.numpy().astype(np.int64)
    lows = np.array([ks[np.argmax(row)] - 1 if row.any() else 0 for row in low_ok])
    highs = np.array([ks[len(row) - 1 - np.argmax(row[::-1])] + 1 if row.any() else 0 for row in high_ok])
    highs = np.maximum(highs, lows)
    too_wide = highs - lows + 1 > MAX_SYMBOLS
    centre = (lows + highs) // 2
    lows = np.where(too_wide, centre - MAX_SYMBOLS // 2, lows)
    highs = np.where(too_wide, lows + MAX_SYMBOLS - 1, highs)
    return lows, highs


def build_tables(density: FactorizedDensity, levels: int = 0, precision: int = PRECISION,
                 tail_mass: float = TAIL_MASS) -> CdfTables:
    """The tables of ``density``: per channel (``levels`` = 0, rounding) or per channel × dither level."""
    lows, highs = channel_ranges(density, tail_mass)
    density = _float64(density)
    offsets = dither_centres(levels) if levels else np.zeros(1)
    pmfs, starts = [], []
    for c in range(density.channels):
        ks = np.arange(lows[c], highs[c] + 1, dtype=np.float64)
        points = ks[None, :] + offsets[:, None]  # [L, S]
        upper = _channel_cdf(density, c, points + 0.5)
        lower = _channel_cdf(density, c, points - 0.5)
        for row in np.clip(upper - lower, 0.0, 1.0):
            pmfs.append(row)
            starts.append(lows[c])
    width = max(len(p) for p in pmfs) + 2  # symbols + overflow + the leading 0
    cdf = np.zeros((len(pmfs), width), dtype=np.int32)
    lengths = np.zeros(len(pmfs), dtype=np.int32)
    for t, pmf in enumerate(pmfs):
        counts = quantize_pmf(pmf, precision)
        cdf[t, 1:len(counts) + 1] = np.cumsum(counts)
        cdf[t, len(counts) + 1:] = cdf[t, len(counts)]  # padding: the final value repeated
        lengths[t] = len(counts) + 1
    return CdfTables(cdf, lengths, np.asarray(starts, dtype=np.int32))


def _float64(density: FactorizedDensity) -> FactorizedDensity:
    """A float64 CPU copy: tables are computed once, as exactly as we can."""
    return copy.deepcopy(density).to(device="cpu", dtype=torch.float64)


def _channel_cdf(density: FactorizedDensity, channel: int, points: np.ndarray) -> np.ndarray:
    """c_channel at ``points`` (any shape), float64."""
    flat = torch.from_numpy(points.reshape(1, -1))
    full = torch.zeros(density.channels, flat.shape[1], dtype=torch.float64)
    full[channel] = flat[0]
    return density.cdf(full)[channel].numpy().reshape(points.shape)


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer counts summing to ``2**precision`` for the symbols of ``pmf`` plus an overflow symbol
    (mass ``1 − Σ pmf``), every count ≥ 1: round the scaled masses, then move the rounding surplus
    or deficit onto the largest counts (which changes their probabilities the least, relatively)."""
    total = 1 << precision
    pmf = np.clip(np.asarray(pmf, dtype=np.float64), 0.0, None)
    masses = np.append(pmf, max(0.0, 1.0 - pmf.sum()))
    if len(masses) > total:
        raise ValueError(f"{len(masses)} symbols cannot each get a count of 2**{precision}")
    counts = np.maximum(1, np.round(masses / masses.sum() * total)).astype(np.int64)
    surplus = int(counts.sum()) - total
    while surplus != 0:
        order = np.argsort(-counts, kind="stable")
        step = 1 if surplus > 0 else -1
        for i in order:
            if surplus == 0:
                break
            if step > 0 and counts[i] <= 1:
                continue
            counts[i] -= step
            surplus -= step
    return counts
