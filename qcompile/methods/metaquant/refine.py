"""An SGD/Adam optimizer whose update direction π(g) can be computed without being applied.

MetaQuant needs π twice per iteration (the paper's Eq. 6 and Alg. 1): the forward uses
W − lr·π(calib ⊙ mg) and the end of the iteration commits that same update. ``refine(p)``
computes π(p.grad), advances p's optimizer state (so π is evaluated once per iteration) and
parks the direction; ``step()`` then applies p ← p − lr·π to every parameter, reusing a parked
direction or refining ``p.grad`` on the spot. Without ``refine`` calls it is ordinary SGD/Adam,
equal to ``torch.optim.SGD``/``Adam`` (a test checks it).

Unlike the reference's custom optimizers (whose Adam.step adds +lr·grad; it is never called
there), ``step()`` has the right sign for both rules. Being a ``torch.optim.Optimizer``, it works
with the loop's lr schedulers and its ``state_dict`` is the usual one.

π, with g' = g + wd·p:
- SGD: g' (momentum μ > 0: buf ← μ·buf + g', first buf = g'; π = buf — torch's convention);
- Adam: m ← β1·m + (1−β1)·g', v ← β2·v + (1−β2)·g'², π = (m/(1−β1^t)) / (√(v/(1−β2^t)) + ε).
"""

from __future__ import annotations

import torch

PENDING = "pending_direction"


class RefinedOptimizer(torch.optim.Optimizer):
    """``kind`` is 'sgd' or 'adam'; see the module docstring."""

    def __init__(self, params, kind: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if kind not in ("sgd", "adam"):
            raise ValueError(f"kind must be 'sgd' or 'adam', got {kind!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
        super().__init__(params, defaults)
        self.kind = kind

    def _group(self, p: torch.Tensor) -> dict:
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                return group
        raise KeyError("parameter not managed by this optimizer")

    @torch.no_grad()
    def refine(self, p: torch.Tensor) -> torch.Tensor:
        """π(p.grad), advancing p's state; parked so that the next ``step()`` applies it."""
        if p.grad is None:
            raise ValueError("refine needs p.grad")
        group, state = self._group(p), self.state[p]
        g = p.grad
        if group["weight_decay"]:
            g = g.add(p, alpha=group["weight_decay"])
        direction = self._adam(g, group, state) if self.kind == "adam" else self._sgd(g, group, state)
        state[PENDING] = direction
        return direction

    @staticmethod
    def _sgd(g: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
        momentum = group["momentum"]
        if not momentum:
            return g.clone()
        buf = state.get("momentum_buffer")
        if buf is None:
            state["momentum_buffer"] = buf = g.clone()
        else:
            buf.mul_(momentum).add_(g)
        return buf.clone()

    @staticmethod
    def _adam(g: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(g)
            state["exp_avg_sq"] = torch.zeros_like(g)
        state["step"] += 1
        t = float(state["step"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
        return (m / (1 - beta1 ** t)).div_(denom)

    @torch.no_grad()
    def step(self, closure=None):
        """p ← p − lr·π for every parameter with a parked direction or a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                direction = self.state[p].pop(PENDING, None) if p in self.state else None
                if direction is None and p.grad is not None:
                    direction = self.refine(p)
                    self.state[p].pop(PENDING)
                if direction is not None:
                    p.add_(direction, alpha=-group["lr"])
        return loss

    @staticmethod
    def commit_value(p: torch.Tensor, direction: torch.Tensor, lr: float) -> torch.Tensor:
        """The value ``step()`` will give p, computed by the same kernel (bitwise equal)."""
        return torch.add(p.detach(), direction, alpha=-lr)
