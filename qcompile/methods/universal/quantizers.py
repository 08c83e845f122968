"""UQ nodes: the weight and activation quantizers of the ``universal`` method (uq.md §4.3).

In training (or inside :func:`training_channel`) each one applies its mode's channel to
y = clip(x/Δ, qmin, qmax) — clipped *before* the noise, so the error stays uniform at saturation too:

* ``un``: y + u;  ``uq``: ⌊y − u⌉ + u (straight-through round, so d/dy = 1);
* ``sr``: r_α(⌊s_α(y) − u⌉ + u) = r_α(s_α(y) + e) with e the UQ error; with ``expected_grads`` the
  derivative of r_α is its expectation over the noise (uq.md §1.3).

u is fresh per forward, uniform over the centres of ``levels`` cells (the deployed dither's law).
Outside training the node is what the artifact computes (§4.3): hard rounding ⌊y⌉ (deterministic
export, and every activation), or, for weights with ``export='dither'``, k = ⌊y − u⌋ with u the shared-seed
offsets of node ``'<layer>:weight'``, returned in the integer domain as 2L·k + 2L·u with step Δ/(2L), so
quantized layers still sum integers. Δ is the core uniform quantizer's (per-channel max|W|/qmax) for
weights and the calibrated range for activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from qcompile.errors import ConfigError
from qcompile.methods.universal.dither import dither_numerators
from qcompile.methods.universal.ops import (clip_to_grid, perturb_and_apply, soft_round,
                                            soft_round_conditional_mean, uniform_noise)
from qcompile.methods.universal.options import UniversalOptions
from qcompile.quantizers import ActivationQuantizer, UniformQuantizer
from qcompile.quantizers.base import along_axis
from qcompile.quantizers.codes import Dither, QuantCodes
from qcompile.quantizers.ste import round_ste


def channel(y: torch.Tensor, mode: str, alpha: torch.Tensor, levels: int, expected_grads: bool) -> torch.Tensor:
    """The training channel of ``mode`` on y (in units of Δ, already clipped to the grid)."""
    u = uniform_noise(y, levels=levels)
    if mode == "un":
        return y + u
    if mode == "uq":
        return round_ste(y - u) + u
    s = soft_round(y, alpha)
    error = (torch.round(s - u) + u - s).detach()  # the UQ error of s: uniform, independent of s
    return perturb_and_apply(lambda z: soft_round_conditional_mean(z, alpha), s, error, expected_grads)


class UniversalNode:
    """What both quantizers share: settings, α (a buffer, set by the α schedule) and the noise switch."""

    settings: UniversalOptions
    noisy: bool | None  # None: noise exactly while training; True/False: forced (see training_channel)

    def _setup(self: nn.Module, settings: UniversalOptions) -> None:
        self.settings, self.noisy = settings, None
        self.register_buffer("alpha", torch.tensor(float(settings.alpha_start)))

    def sampling(self) -> bool:
        return self.training if self.noisy is None else self.noisy

    def set_alpha(self, alpha: float) -> None:
        self.alpha.fill_(alpha)

    def _channel(self, y: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return channel(y, s.mode, self.alpha, s.levels, s.expected_grads)


class UniversalWeightQuantizer(UniversalNode, UniformQuantizer):
    """Symmetric uniform grid (per-channel by default) with a UQ node in front of the rounding."""

    def __init__(self, bits: int, per_channel: bool, node: str, settings: UniversalOptions):
        if not 2 <= bits <= 8:
            raise ConfigError(f"universal quantization needs --w-bits 2..8, got {bits}",
                              hint="a 1-bit symmetric grid has no zero level to dither around; use --w-bits 2")
        UniformQuantizer.__init__(self, bits, symmetric=True, per_channel=per_channel)
        self._setup(settings)
        self.node = node
        self._dither_cache: tuple[tuple, torch.Tensor] | None = None

    def _grid(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, _ = self._params(w)
        y = clip_to_grid(w / along_axis(scale, w, 0), -self.qmax_signed, self.qmax_signed)
        return y, scale

    def numerators(self, w: torch.Tensor) -> torch.Tensor:
        """The shared-seed offsets' numerators (over 2·levels) for a weight of ``w``'s shape, cached."""
        key = (tuple(w.shape), w.device)
        if self._dither_cache is None or self._dither_cache[0] != key:
            n, _ = dither_numerators(self.settings.seed, self.node, w.shape, self.settings.levels, w.device)
            self._dither_cache = (key, n)
        return self._dither_cache[1]

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, scale = self._grid(w)
        if self.sampling():
            return self._channel(y), scale
        if not self.settings.dither:
            return round_ste(y), scale
        two_l = 2 * self.settings.levels
        n = self.numerators(w).to(w.dtype)
        k = round_ste(y - n / two_l)  # u = n/2L exactly (a power-of-two denominator)
        return k * two_l + n, scale / two_l

    def codes(self, w: torch.Tensor) -> QuantCodes:
        """Hard-rounded codes, or with ``export='dither'`` codes k whose decode 2L·k + n equals ``decompose``'s."""
        with torch.no_grad():
            y, scale = self._grid(w)
            if not self.settings.dither:
                return QuantCodes(torch.round(y).to(torch.int64), scale, torch.zeros_like(scale, dtype=torch.int64),
                                  self.bits, True, axis=self.axis)
            s, two_l = self.settings, 2 * self.settings.levels
            n = self.numerators(w)
            k = torch.round(y - n.to(w.dtype) / two_l).to(torch.int64)
            return QuantCodes(k, scale / two_l, torch.zeros_like(scale, dtype=torch.int64), self.bits, True,
                              multiplier=two_l, axis=self.axis, dither=Dither(s.seed, self.node, s.levels, n))

    def describe(self) -> str:
        form = "dither" if self.settings.dither else "round"
        return f"universal/{self.settings.mode} {super().describe()} (export: {form})"


class UniversalActivationQuantizer(UniversalNode, ActivationQuantizer):
    """Calibrated activation range with a UQ node in training; hard rounding outside it (every export:
    a per-element dither of activations is a fractional zero point no integer kernel has, uq.md §4.3)."""

    def __init__(self, bits: int, signed: bool, settings: UniversalOptions):
        ActivationQuantizer.__init__(self, bits, signed)
        self._setup(settings)

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not bool(self.frozen):
            self.observe(x)
        scale = self.scale()
        y = clip_to_grid(x / scale, self.qmin, self.qmax)
        return (self._channel(y) if self.sampling() else round_ste(y)), scale

    def describe(self) -> str:
        return f"universal/{self.settings.mode} {super().describe()}"


def universal_nodes(model: nn.Module) -> list[UniversalNode]:
    return [m for m in model.modules() if isinstance(m, UniversalNode)]


@contextmanager
def training_channel(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Inside the block every UQ node of ``model`` samples its training channel (``on``) or its deployed
    form (``False``), whatever the module modes: e.g. eval-mode BatchNorm with the noise on, which is
    "the model as trained" that the train/export gap compares with."""
    nodes = universal_nodes(model)
    previous = [n.noisy for n in nodes]
    try:
        for n in nodes:
            n.noisy = on
        yield model
    finally:
        for n, p in zip(nodes, previous):
            n.noisy = p
