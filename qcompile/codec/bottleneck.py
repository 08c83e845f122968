"""Where an autoencoder's latent is quantized: the user's marker and the quantization node.

:class:`Bottleneck` is what a user writes into a model (an identity with the latent's channel
count); :class:`~qcompile.passes.insert_bottleneck.InsertBottleneck` replaces it by a
:class:`QuantizedBottleneck`, which owns the channel and the entropy model of the latents:

==========  ==========================================  ======================================
mode        training                                    evaluation (``eval_quantization``)
==========  ==========================================  ======================================
``un``      ỹ = y + u, fresh u ~ U(−½, ½)                 ⌊y⌉ (round) or ⌊y − u⌉ + u (universal)
``uq``      the same (UN is UQ's training channel)       ``universal`` by default
``uq-sr``   ŷ = r_α(s_α(y) + u), α from a schedule        ``universal`` on v = s_α(y), then r_α
==========  ==========================================  ======================================

In evaluation u is the shared-seed dither (:mod:`qcompile.methods.universal.dither`, node id
``bottleneck:latent``, indexed over ONE image's [1, M, h, w] latent, levels ``L``): exactly the
offsets the runtime regenerates. The likelihoods returned are those of what is coded — the noisy
density at ỹ in training, ``P(k | u) = c(k + u + ½) − c(k + u − ½)`` in evaluation — so −Σ log₂ of
them is the estimated size of the bitstream.

Export splits the node in two (:meth:`analysis` ends the encoder graph, :meth:`synthesis` starts the
decoder graph): the encoder outputs v (y, or s_α(y)), the runtime quantizes it, and the decoder
applies r_α to its input ŷ. The density of v is learned directly (the factorized prior fits the
marginal of s_α(y) as readily as that of y), so the tables are built the same way in every mode.
"""

from __future__ import annotations

import torch
from torch import nn

from qcompile.codec.entropy import FactorizedDensity
from qcompile.methods.universal.dither import dither_offsets
from qcompile.methods.universal.ops import perturb_and_apply, soft_round, soft_round_conditional_mean, uniform_noise

MODES = ("un", "uq", "uq-sr")
QUANTIZATIONS = ("round", "universal")
NODE_ID = "bottleneck:latent"
DEFAULT_LEVELS = 16


class Bottleneck(nn.Module):
    """Marks the latent of an autoencoder: ``y = Bottleneck(M)(y)`` between analysis and synthesis.

    An identity until :func:`qcompile.codec.prepare` (or the InsertBottleneck pass) replaces it with a
    quantization node and an entropy model for ``channels`` latent channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = int(channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y


class QuantizedBottleneck(nn.Module):
    """The quantization node: ``forward(y) → (ŷ, likelihoods)``; see the module docstring."""

    def __init__(self, channels: int, mode: str = "un", seed: int = 0, levels: int = DEFAULT_LEVELS,
                 eval_quantization: str | None = None, expected_grads: bool | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.channels, self.mode, self.seed, self.levels = int(channels), mode, int(seed), int(levels)
        self.eval_quantization = eval_quantization or ("round" if mode == "un" else "universal")
        if self.eval_quantization not in QUANTIZATIONS:
            raise ValueError(f"eval_quantization must be one of {QUANTIZATIONS}, got {self.eval_quantization!r}")
        self.expected_grads = (mode == "uq-sr") if expected_grads is None else bool(expected_grads)
        self.density = FactorizedDensity(channels)
        self.register_buffer("alpha", torch.tensor(1.0 if mode == "uq-sr" else 0.0))

    @property
    def soft(self) -> bool:
        return self.mode == "uq-sr"

    # ------------------------------------------------------------------ the two halves (export)
    def analysis(self, y: torch.Tensor) -> torch.Tensor:
        """v, what the encoder graph outputs and the runtime quantizes: s_α(y) with soft rounding, else y."""
        return soft_round(y, self.alpha) if self.soft else y

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        """What the decoder layers see from the dequantized ŷ: r_α(ŷ) with soft rounding, else ŷ."""
        return soft_round_conditional_mean(y_hat, self.alpha) if self.soft else y_hat

    # ------------------------------------------------------------------ the channel
    def dither(self, v: torch.Tensor) -> torch.Tensor:
        """The shared-seed offsets for latents like ``v`` [N, M, h, w]: one image's [1, M, h, w]
        pattern, the same for every image of the batch (the runtime codes images one at a time)."""
        u = dither_offsets(self.seed, NODE_ID, (1, *v.shape[1:]), self.levels, device=v.device)
        return u.to(v.dtype)

    def quantize(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, ŷ) for evaluation: k = ⌊v⌉ or ⌊v − u⌉ (half to even, as the runtime), ŷ = k or k + u."""
        if self.eval_quantization == "round":
            k = torch.round(v)
            return k, k
        u = self.dither(v)
        k = torch.round(v - u)
        return k, k + u

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.analysis(y)
        if self.training:
            u = uniform_noise(v)
            log_p = perturb_and_apply(lambda z: torch.log(self.density(z)), v, u, self.expected_grads)
            return self.synthesis(v + u), torch.exp(log_p)
        _, y_hat = self.quantize(v)
        return self.synthesis(y_hat), self.density(y_hat)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, mode={self.mode!r}, eval={self.eval_quantization!r}, "
                f"levels={self.levels}, seed={self.seed}")
