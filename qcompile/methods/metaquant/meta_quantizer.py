"""The meta-quantizer: wraps a layer's DoReFa/BWN weight quantizer for MetaQuant training.

Quantized ops call ``weight_quantizer.decompose(self.weight)`` on every forward, so this wrapper
can substitute the meta weight W_meta for W with no change to the user's model or to any forward
signature. The training step sets a per-iteration :class:`MetaContext` before the forward and
clears it after; without one (first iteration, evaluation, export) the wrapper computes exactly
what the inner quantizer computes.

During a training forward it also records what the meta-net needs next iteration
(paper, Alg. 1): W̃ = A(W_meta) and, through a hook, g_Ŵ = ∂ℓ/∂Ŵ — the gradient w.r.t. the
*quantized* weight Ŵ = ints·scale, so g_Ŵ = ∂ℓ/∂ints / scale.

``export_quantizer()`` returns the plain inner quantizer: ``StripForExport`` swaps it in, so the
exported model holds ordinary packed codes and no meta machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qcompile.quantizers.base import WeightQuantizer, along_axis
from qcompile.quantizers.bwn import BWNQuantizer
from qcompile.quantizers.codes import QuantCodes
from qcompile.quantizers.dorefa import DoReFaQuantizer, dorefa_calibration, dorefa_pre_quantize

SUPPORTED = (DoReFaQuantizer, BWNQuantizer)


@dataclass
class MetaContext:
    """What one training forward of one layer uses instead of W.

    ``target`` is the (detached) value of W_meta; ``cg`` = calib ⊙ mg is a leaf that requires
    grad. The forward weight is target + lr·(stopgrad(cg) − cg): its value is exactly
    ``target`` and ∂W_meta/∂cg = −lr, i.e. W_meta = W − lr·[cg + stopgrad(π − cg)]: the paper's
    Eq. 6 forward, with the optimizer's refinement π passed straight through. The model's backward thus
    leaves ∂ℓ/∂cg in ``cg.grad``, from which the step back-propagates into φ.
    """

    target: torch.Tensor
    cg: torch.Tensor
    lr: float

    def weight(self) -> torch.Tensor:
        return self.target + self.lr * (self.cg.detach() - self.cg)


class MetaQuantizer(WeightQuantizer):
    """A training-time wrapper around a DoReFa or BWN weight quantizer (see the module docstring)."""

    def __init__(self, inner: WeightQuantizer):
        super().__init__()
        if not isinstance(inner, SUPPORTED):
            raise TypeError(f"MetaQuant wraps DoReFa or BWN weight quantizers, not {type(inner).__name__}")
        self.inner = inner
        self.bits = inner.bits
        self.per_channel = inner.per_channel
        self.sign_symmetric = inner.sign_symmetric
        self.context: MetaContext | None = None
        self.grad_hat: torch.Tensor | None = None  # g_Ŵ of the last backward
        self.w_tilde: torch.Tensor | None = None  # W̃ of the last training forward

    def pre_quantize(self, w: torch.Tensor) -> torch.Tensor:
        """A(W): DoReFa's tanh/2max + ½, identity for BWN."""
        return dorefa_pre_quantize(w) if isinstance(self.inner, DoReFaQuantizer) else w

    def calibration(self, w: torch.Tensor) -> torch.Tensor:
        """∂W̃/∂W as MetaQuant uses it (Eq. 4): (1 − tanh²W)/max|tanh W| for DoReFa, 1 for BWN."""
        if isinstance(self.inner, DoReFaQuantizer):
            return dorefa_calibration(w.detach())
        return torch.ones_like(w).detach()

    def _quantize_pre(self, w_tilde: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.inner, DoReFaQuantizer):
            return self.inner.quantize_pre(w_tilde), self.inner.scale(w_tilde)
        return self.inner.decompose(w_tilde)  # BWN: A is the identity

    def decompose(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context is not None:
            w = self.context.weight()
        w_tilde = self.pre_quantize(w)
        ints, scale = self._quantize_pre(w_tilde)
        if self.training and ints.requires_grad:
            self.w_tilde = w_tilde.detach()
            ints.register_hook(self._capture_hook(scale.detach()))
        return ints, scale

    def _capture_hook(self, scale: torch.Tensor):
        def capture(grad: torch.Tensor) -> None:
            g = grad.detach() / along_axis(scale, grad, self.axis or 0)
            self.grad_hat = g if self.grad_hat is None else self.grad_hat + g  # a layer used twice
        return capture

    def begin_capture(self) -> None:
        """Forget the last g_Ŵ before a new forward (a reused layer's gradients then add up)."""
        self.grad_hat = None

    def codes(self, w: torch.Tensor) -> QuantCodes:
        return self.inner.codes(w)

    def export_quantizer(self) -> WeightQuantizer:
        """The plain quantizer to export in place of this wrapper."""
        return self.inner

    def describe(self) -> str:
        return f"metaquant({self.inner.describe()})"
