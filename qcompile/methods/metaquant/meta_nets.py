"""The shared, coordinate-wise meta-network M_φ: the paper's FC-Grad, MultiFC and LSTMFC.

Every variant maps one weight's inputs to one output, g_W̃ = ∂ℓ/∂W̃ for that weight; a layer's
weights form the batch. Inputs are raw (no log/sign encoding, no normalisation), exactly as in
the paper: g is the previous iteration's gradient w.r.t. the quantized weight Ŵ, W̃ the previous
pre-quantized weight.

    FC-Grad  M(g)                 — with the paper's bias-free, linear FC: a learned gain c·g
    MultiFC  g ⊙ M(W̃)             — M plays a learned, weight-dependent "STE gate"; with FC
                                    biases (the default on BWN, see :mod:`.options`) c·W̃ + d
    LSTMFC   g ⊙ FC(LSTM(W̃; h,c)) — each weight keeps its own (h, c) across iterations

Nonlinearity flags are honoured (the reference compares strings with ``is``, so its flags never
fire). The one interface, ``forward(g, w_tilde, state) -> (out, state)`` on
flat tensors, lets the step process any slice of any layer (see :mod:`.chunking`).
"""

from __future__ import annotations

import torch
from torch import nn

from qcompile.methods.metaquant.options import MetaQuantOptions

State = tuple[torch.Tensor, torch.Tensor] | None
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def fc_stack(n_in: int, hidden: int, layers: int, bias: bool, nonlinearity: str | None) -> nn.Sequential:
    """``layers`` Linear layers n_in → H → … → H → 1, with ``nonlinearity`` between them."""
    widths = [n_in] + [hidden] * (layers - 1) + [1]
    modules: list[nn.Module] = []
    for i in range(layers):
        if i > 0 and nonlinearity is not None:
            modules.append(_ACTIVATIONS[nonlinearity]())
        modules.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
    return nn.Sequential(*modules)


def affine_coefficients(stack: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(c, d), differentiable, with stack(x) = c·x + d when the stack has no nonlinearity, else None
    (d is None when the stack is also bias-free).

    A 1-input stack of Linear layers is affine, so :func:`apply_fc` evaluates it in O(N) instead
    of keeping N × H activations; the function and its gradients w.r.t. every parameter are the
    same (up to float rounding) as running the layers one by one.
    """
    c: torch.Tensor | None = None
    d: torch.Tensor | None = None
    for m in stack:
        if not isinstance(m, nn.Linear):
            return None
        c = m.weight if c is None else m.weight @ c
        d = None if d is None else m.weight @ d
        if m.bias is not None:
            d = m.bias if d is None else d + m.bias
    if c is None or c.numel() != 1:  # only a 1-input, 1-output stack is a scalar affine map
        return None
    return c.reshape(()), None if d is None else d.reshape(())


def apply_fc(stack: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """stack applied per element of flat ``x`` (a 1-input stack), collapsed when affine."""
    coefficients = affine_coefficients(stack)
    if coefficients is None:
        return stack(x.unsqueeze(1)).squeeze(1)
    c, d = coefficients
    return x * c if d is None else x * c + d


def affine_gain(stack: nn.Sequential) -> tuple[float, float] | None:
    """(c, d) as floats when stack(x) = c·x + d (d = 0 without biases), else None.

    For the paper's bias-free 2-layer FC-Grad, c = Σ_k w2_k·w1_k: the whole meta-network is then this
    one learned step-size multiplier, worth logging over training. For MultiFC, d is the gate at W̃ = 0.
    """
    coefficients = affine_coefficients(stack)
    if coefficients is None:
        return None
    c, d = coefficients
    return float(c.detach()), 0.0 if d is None else float(d.detach())


class MetaNet(nn.Module):
    """Base: ``forward(g, w_tilde, state)`` on flat (n,) tensors → ((n,) output, new state)."""

    stateful = False

    def init_state(self, n: int, like: torch.Tensor) -> State:
        """The state of ``n`` weights that have no history yet (None for stateless variants)."""
        return None

    def gain(self) -> tuple[float, float] | None:
        """(c, d) when the network's FC is affine, M(x) = c·x + d (see :func:`affine_gain`)."""
        return None


class FCGrad(MetaNet):
    """g_W̃ = M(g_Ŵ)."""

    def __init__(self, hidden: int, layers: int, bias: bool, nonlinearity: str | None):
        super().__init__()
        self.fc = fc_stack(1, hidden, layers, bias, nonlinearity)

    def forward(self, g: torch.Tensor, w_tilde: torch.Tensor, state: State = None):
        return apply_fc(self.fc, g), None

    def gain(self) -> tuple[float, float] | None:
        return affine_gain(self.fc)


class MultiFC(MetaNet):
    """g_W̃ = g_Ŵ ⊙ M(W̃)."""

    def __init__(self, hidden: int, layers: int, bias: bool, nonlinearity: str | None):
        super().__init__()
        self.fc = fc_stack(1, hidden, layers, bias, nonlinearity)

    def forward(self, g: torch.Tensor, w_tilde: torch.Tensor, state: State = None):
        return g * apply_fc(self.fc, w_tilde), None

    def gain(self) -> tuple[float, float] | None:
        return affine_gain(self.fc)


class LSTMFC(MetaNet):
    """g_W̃ = g_Ŵ ⊙ FC(h'), (h', c') = LSTM(W̃; h, c). Sequence length 1, so an LSTMCell.

    The head keeps PyTorch's default bias like the paper's; the caller carries (h', c')
    detached to the next iteration (truncated BPTT of length 1).
    """

    stateful = True

    def __init__(self, hidden: int, layers: int, nonlinearity: str | None):
        super().__init__()
        self.hidden = hidden
        self.cell = nn.LSTMCell(1, hidden)
        self.head = fc_stack(hidden, hidden, layers, True, nonlinearity)

    def init_state(self, n: int, like: torch.Tensor) -> State:
        zeros = torch.zeros(n, self.hidden, dtype=like.dtype, device=like.device)
        return zeros, zeros.clone()

    def forward(self, g: torch.Tensor, w_tilde: torch.Tensor, state: State = None):
        h, c = self.cell(w_tilde.unsqueeze(1), state)
        return g * self.head(h).squeeze(1), (h, c)


def build_meta_net(options: MetaQuantOptions, sign_symmetric: bool = False) -> MetaNet:
    """The variant named by ``options.meta``, with PyTorch's default initialisation; FC biases as
    :meth:`MetaQuantOptions.resolved_bias` decides for a quantizer that is (not) ``sign_symmetric``.

    Default init means FC-Grad's initial gain is random and may be negative:
    φ learns the sign within the first iterations, as in the paper.
    """
    o = options
    bias = o.resolved_bias(sign_symmetric)
    if o.meta == "fc-grad":
        return FCGrad(o.hidden, o.fc_layers, bias, o.nonlinearity)
    if o.meta == "multifc":
        return MultiFC(o.hidden, o.fc_layers, bias, o.nonlinearity)
    return LSTMFC(o.hidden, o.fc_layers, o.nonlinearity)
