"""The entropy model of a codec's latents: a learned per-channel density, convolved with the unit box.

Why this density (Ballé et al. 2018, "deep factorized" prior, appendix 6.1): it is non-parametric —
a per-channel monotone MLP ``l_c`` of a scalar whose sigmoid is a CDF ``c(z) = σ(l_c(z))`` — so it fits
whatever marginal the encoder produces, including the soft-rounded latents of UN+UQ+SR, which no
Gaussian or Laplacian fits. Monotonicity holds by construction: every matrix is ``softplus(H) ≥ 0``
and every gate is ``z + tanh(a)·tanh(z)`` with ``tanh(a) > −1``.

Training sees ỹ = y + u, u ~ U(−½, ½); the density of ỹ is the density of y convolved with the unit
box, ``p(ỹ) = c(ỹ + ½) − c(ỹ − ½)`` (uq.md §2). The same function gives the probability of a symbol:
``P(k) = c(k + ½) − c(k − ½)`` under rounding and ``P(k | u) = c(k + u + ½) − c(k + u − ½)`` under
universal quantization, so the rate trained is the rate coded. The difference is taken on the side of
the median where both sigmoids are small (the "sign trick"), so it does not cancel to 0 in the tails.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LIKELIHOOD_BOUND = 1e-9  # floor of a likelihood in training: a log of 0 has no gradient to follow


class FactorizedDensity(nn.Module):
    """Per-channel learned CDF ``c_c(z) = σ(l_c(z))`` for ``channels`` latent channels.

    ``filters`` are the hidden widths of the scalar MLP (Ballé 2018 use (3, 3, 3)); ``init_scale``
    sets the initial spread of the density (its support starts at about ±init_scale).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = int(channels)
        widths = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = float(torch.log(torch.expm1(torch.tensor(1.0 / scale / widths[i + 1]))))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, widths[i + 1], 1) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """``l_c(z)`` for ``z`` of shape [C, 1, P] (P points per channel): shape [C, 1, P]."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            z = torch.matmul(F.softplus(matrix.to(z.dtype)), z) + bias.to(z.dtype)
            if i < len(self.factors):
                z = z + torch.tanh(self.factors[i].to(z.dtype)) * torch.tanh(z)
        return z

    def _per_channel(self, y: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """[N, C, *] → [C, 1, N·prod(*)] and the permuted shape to undo it."""
        if y.dim() < 2 or y.shape[1] != self.channels:
            raise ValueError(f"expected latents [N, {self.channels}, ...], got {tuple(y.shape)}")
        perm = y.transpose(0, 1).contiguous()
        return perm.reshape(self.channels, 1, -1), tuple(perm.shape)

    def box_likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """``c(y + ½) − c(y − ½)`` elementwise for latents [N, C, ...] (not floored)."""
        z, shape = self._per_channel(y)
        lower, upper = self.logits(z - 0.5), self.logits(z + 0.5)
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return p.reshape(shape).transpose(0, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Training likelihoods of ``y`` (noisy or quantized latents), floored at LIKELIHOOD_BOUND."""
        return lower_bound(self.box_likelihood(y), LIKELIHOOD_BOUND)

    @torch.no_grad()
    def cdf(self, points: torch.Tensor) -> torch.Tensor:
        """``c_c`` at ``points`` [C, P] (float64 recommended for tables): [C, P]."""
        return torch.sigmoid(self.logits(points.unsqueeze(1))).squeeze(1)


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows where it pushes x up (CompressAI's LowerBound)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound), with gradients that can lift x back over the bound (a plain clamp when no
    gradient is wanted, e.g. while exporting to ONNX)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.clamp_min(bound)
    return _LowerBound.apply(x, bound)
