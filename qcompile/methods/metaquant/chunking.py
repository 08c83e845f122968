"""Running M_φ over a layer's weights in chunks, so its activations never exceed one chunk.

A coordinate-wise meta-net keeps N × H activations per hidden layer for backward — 4.7 GB per
hidden tensor for ResNet-18's 11.7 M weights at H = 100 (float32). Chunking the forward alone
would not help, since every chunk's graph must live until the model's backward. So a
:class:`MetaPass` runs the meta-net twice, like activation checkpointing done by hand:

1. :meth:`MetaPass.forward`, under ``no_grad`` and chunk by chunk — only the (N,) output and the new
   LSTM state are kept;
2. :meth:`MetaPass.backward`, once the model's backward has produced ∂ℓ/∂mg, recomputes each
   chunk with grad and immediately back-propagates it into φ's ``.grad`` (which accumulates).

Peak meta-net activation memory is one chunk's (chunk_size × H floats per hidden layer), at the
cost of a second meta-net forward. The recomputation is exact: the meta-net is deterministic
and its inputs (g, W̃, the *old* state) are detached tensors kept for the purpose.
``chunk_size == 0`` trades memory for time: the whole layer's graph is kept from step 1 to
step 2 and nothing is recomputed. (The paper's linear FC variants hold no N × H activations
either way: :func:`~.meta_nets.apply_fc` collapses them.)
"""

from __future__ import annotations

import torch

from qcompile.methods.metaquant.meta_nets import MetaNet, State


def chunk_slices(n: int, chunk_size: int) -> list[slice]:
    """Consecutive slices covering range(n); ``chunk_size == 0`` means one slice."""
    size = max(n if chunk_size <= 0 else chunk_size, 1)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _state_slice(state: State, s: slice) -> State:
    return None if state is None else (state[0][s], state[1][s])


def _detached(state: State) -> State:
    return None if state is None else (state[0].detach(), state[1].detach())


class MetaPass:
    """One layer's meta-net evaluation in one iteration: :meth:`forward` gives the output and new
    state (both detached), :meth:`backward` later gives ∂ℓ/∂φ. Inputs are flat (N,) tensors;
    the pass keeps only what the backward needs (the inputs, or the graph)."""

    def __init__(self, net: MetaNet, g: torch.Tensor, w_tilde: torch.Tensor, state: State, chunk_size: int):
        self.net, self.g, self.w_tilde, self.state, self.chunk_size = net, g, w_tilde, state, chunk_size
        self._graph: torch.Tensor | None = None

    def forward(self) -> tuple[torch.Tensor, State]:
        if self.chunk_size != 0:
            return self._generate()
        with torch.enable_grad():
            self._graph, new_state = self.net(self.g, self.w_tilde, self.state)
        return self._graph.detach(), _detached(new_state)

    @torch.no_grad()
    def _generate(self) -> tuple[torch.Tensor, State]:
        state, slices = self.state, chunk_slices(self.g.numel(), self.chunk_size)
        if len(slices) == 1:  # no copies into preallocated outputs (page faults cost on CPU)
            return self.net(self.g, self.w_tilde, state)
        out = torch.empty_like(self.g)
        new_state = None if state is None else (torch.empty_like(state[0]), torch.empty_like(state[1]))
        for s in slices:
            out[s], chunk_state = self.net(self.g[s], self.w_tilde[s], _state_slice(state, s))
            if new_state is not None and chunk_state is not None:
                new_state[0][s], new_state[1][s] = chunk_state
        return out, new_state

    def backward(self, grad_out: torch.Tensor) -> None:
        """Accumulate Σ_i grad_out_i · ∂M_i/∂φ into φ's ``.grad`` (once per pass)."""
        if self._graph is not None:
            graph, self._graph = self._graph, None
            graph.backward(grad_out)
            return
        with torch.enable_grad():
            for s in chunk_slices(self.g.numel(), self.chunk_size):
                out, _ = self.net(self.g[s], self.w_tilde[s], _state_slice(self.state, s))
                out.backward(grad_out[s])
