"""MetaQuant's training step (the paper's Alg. 1, with its Eq. 6 forward by default).

One iteration t ≥ 2, for every meta-quantized layer (W its weight, lr the current base lr):

1. mg = M_φ(g_Ŵ,t−1, W̃_t−1) — inputs from the previous iteration, detached; run in chunks
   under no_grad (:mod:`.chunking`); an LSTMFC layer's new (h, c) is kept, detached.
2. calib = ∂W̃/∂W at the current W; cg = calib ⊙ mg (a leaf, so ∂ℓ/∂cg lands in cg.grad).
3. The forward value of W:
   - 'paper': W.grad ← cg, π = refine(W) now, forward W − lr·π — exactly the weight that
     step 7 commits;
   - 'reference': forward W − lr·π_{t−1} (the direction committed last iteration), the
     reference code's stale look-ahead. Not reproduced from it: on iteration 2 it used the
     raw STE gradient of iteration 1 (issue #3; here π_{t−1} = 0), and it also looked ahead
     on the biases of meta layers (b − lr·b.grad; here biases are used as they are).
   Either way W_meta = value + lr·(stopgrad(cg) − cg): φ's gradient passes straight through π.
4. Forward, objective, backward: fills cg.grad, the gradients of every non-meta parameter
   (BN, biases, float layers), and — via the meta-quantizers' hooks — g_Ŵ,t and W̃_t.
   W itself is not in the graph: its STE gradient is never formed, let alone used.
5. ∂ℓ/∂φ: ∂ℓ/∂mg = calib ⊙ cg.grad, back-propagated into φ (recomputed chunk by chunk, or
   through the kept graph when chunk_size = 0); Adam step on φ.
6. 'reference' only: W.grad ← cg, π = refine(W).
7. ``optimizer.step()``: every base parameter p ← p − lr·π — meta weights with their parked
   π, the others with π of their fresh gradients (the same SGD/Adam rule).

The paper's MultiFC freezes every sign on a sign-symmetric quantizer (BWN); the default adds FC
biases there (:mod:`.options`). Setup warns (:class:`MetaQuantWarning`) when the paper's form is
chosen anyway, and :meth:`MetaQuantStep.frozen_codes_cause` names it to the loop's frozen-codes guard.

Iteration 1 only harvests g_Ŵ and W̃: nothing is updated (paper Sec. 4.4). φ therefore gets
gradient only through W_meta: none on iteration 1, none when lr = 0.

Data-parallel (several ranks, :meth:`MetaQuantStep.data_parallel`): φ is one network replicated on every
rank, and the step stays one global-batch iteration if every rank holds the same φ, W, g_Ŵ,t−1, W̃_t−1,
LSTM state and optimizer state at its start — then steps 1–3 give the same mg, cg and W_meta everywhere.
Only step 4 sees data, so after it, in one weighted all-reduce (each rank × its share of the global batch):
φ's gradient (∂ℓ/∂φ is linear in the per-sample losses, so the sum of the ranks' shares is the full batch's),
g_Ŵ,t, the gradients of the non-meta parameters, BatchNorm running statistics and the loss. What DDP
would not give for free: it all-reduces parameter ``.grad`` only, but MetaQuant's state g_Ŵ is the
gradient w.r.t. the *quantized* weight Ŵ, a non-leaf captured by a hook, and it is the meta-net's input
next iteration — left per-rank, mg, the LSTM state and then W would drift apart across ranks. φ's
gradient only exists after the step's own meta backward (step 5), i.e. after any DDP bucket hook has
fired; and the meta weights' own ``.grad`` (calib ⊙ mg) is already identical, so it is not reduced.

Per-step metrics (``extra_metrics``): ``meta_loss`` — the loss φ is trained on, i.e. this batch's
task loss evaluated at the meta weights W_meta(φ) (so it equals ``loss`` on the same step; absent
on iteration 1 where φ sees no loss); ``meta_grad_norm`` = ‖∂ℓ/∂φ‖; ``meta_gain`` — the learned
gain c when the FC meta-net is affine (FC-Grad: M(g) = c·g; MultiFC: M(W̃) = c·W̃), and with FC
biases ``meta_offset`` d (M = c·x + d; MultiFC's gate at W̃ = 0); ``peak_mem_mb`` when memory is measured (:mod:`.memory`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qcompile import distributed
from qcompile.errors import ConfigError, QCompileWarning
from qcompile.methods.metaquant.chunking import MetaPass
from qcompile.methods.metaquant.memory import PeakMemory, tensor_bytes
from qcompile.methods.metaquant.meta_nets import State, build_meta_net
from qcompile.methods.metaquant.meta_quantizer import MetaContext, MetaQuantizer
from qcompile.methods.metaquant.options import SIGN_FREEZE, SIGN_FREEZE_HINT, MetaQuantOptions
from qcompile.methods.metaquant.refine import RefinedOptimizer
from qcompile.quantized_ops import QuantizedOp
from qcompile.train.config import TrainConfig
from qcompile.train.objective import Objective
from qcompile.train.strategy import StepOutput, StepStrategy, build_scheduler


def meta_layers(model: nn.Module) -> list[tuple[str, nn.Parameter, MetaQuantizer]]:
    """(name, weight, meta-quantizer) of every quantized op whose weight quantizer is a MetaQuantizer."""
    return [(name, m.weight, m.weight_quantizer) for name, m in model.named_modules()
            if isinstance(m, QuantizedOp) and isinstance(m.weight_quantizer, MetaQuantizer)]


class MetaQuantWarning(QCompileWarning):
    """A MetaQuant configuration that trains, but is known to train badly."""


@dataclass
class _LayerUpdate:
    """One layer's quantities for the current iteration."""

    name: str
    weight: nn.Parameter
    quantizer: MetaQuantizer
    meta: MetaPass  # produced mg from g_Ŵ,t−1 and W̃_t−1; gives ∂ℓ/∂φ after the backward
    cg: torch.Tensor  # calib ⊙ mg, a leaf requiring grad


class MetaQuantStep(StepStrategy):
    """The MetaQuant iteration (module docstring). ``measure_memory``: None measures on CUDA only."""

    def __init__(self, options: MetaQuantOptions | None = None, measure_memory: bool | None = None):
        self.options = options or MetaQuantOptions()
        self.measure_memory = measure_memory
        self.layers: list[tuple[str, nn.Parameter, MetaQuantizer]] = []
        self.lstm_state: dict[str, State] = {}
        self.stale: dict[str, torch.Tensor] = {}  # reference mode: π committed last iteration
        self.iteration = 0
        self._extra: dict[str, float] = {}
        self.meta_net_bias = False
        self.freezes_signs = False
        self.averager: distributed.GradientAverager | None = None

    def setup(self, model: nn.Module, config: TrainConfig) -> None:
        self.layers = meta_layers(model)
        if not self.layers:
            raise ConfigError("the model has no MetaQuant-quantized layers",
                              hint="quantize the model with method 'metaquant' and a dorefa or bwn weight quantizer")
        device = self.layers[0][1].device
        sign_symmetric = any(q.sign_symmetric for _, _, q in self.layers)
        self.meta_net_bias = self.options.resolved_bias(sign_symmetric)
        self.freezes_signs = self.options.freezes_signs(sign_symmetric)
        if self.freezes_signs:
            warnings.warn(MetaQuantWarning(SIGN_FREEZE, hint=SIGN_FREEZE_HINT), stacklevel=2)
        self.meta_net = build_meta_net(self.options, sign_symmetric).to(device)
        self.meta_optimizer = torch.optim.Adam(self.meta_net.parameters(), lr=self.options.meta_lr)
        self.meta_scheduler = build_scheduler(self.meta_optimizer, config) if self.options.meta_lr_decay else None
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = RefinedOptimizer(params, config.optimizer, config.lr, momentum=config.momentum,
                                          weight_decay=config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, config)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def extra_metrics(self) -> dict[str, float]:
        return dict(self._extra)

    def step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
             objective: Objective) -> StepOutput:
        measure = self.measure_memory if self.measure_memory is not None else inputs.device.type == "cuda"
        if not measure:
            return self._step(model, inputs, targets, objective)
        with PeakMemory(inputs.device) as meter:
            result = self._step(model, inputs, targets, objective)
        self._extra["peak_mem_mb"] = meter.peak_bytes / 2**20
        return result

    def _step(self, model, inputs, targets, objective) -> StepOutput:
        lr, paper = self.lr, self.options.forward_mode == "paper"
        self.meta_optimizer.zero_grad(set_to_none=True)
        self.optimizer.zero_grad(set_to_none=True)
        updates = self._meta_gradients()
        for u in updates:
            direction = self._refine(u) if paper else self.stale.get(u.name)
            if direction is None:  # reference mode, iteration 2: nothing committed yet
                direction = torch.zeros_like(u.weight)
            target = RefinedOptimizer.commit_value(u.weight, direction, lr)
            u.quantizer.context = MetaContext(target, u.cg, lr)
        for _, _, q in self.layers:
            q.begin_capture()
        try:
            outputs = model(inputs)
            loss = objective(outputs, targets, inputs)
            loss.backward()
        finally:
            for _, _, q in self.layers:
                q.context = None
        if updates:
            self._meta_backward(updates)
        loss_value = self._share(loss.detach(), bool(updates))
        if updates:
            self.meta_optimizer.step()
            if not paper:
                self.stale = {u.name: self._refine(u) for u in updates}
            self._drop_unrefined_meta_grads(updates)
            self.optimizer.step()
        self.iteration += 1
        self._extra = self._metrics(loss_value, bool(updates))
        return StepOutput(loss.item(), outputs)

    def _meta_gradients(self) -> list[_LayerUpdate]:
        """Steps 1–2 for every layer with a previous g_Ŵ and W̃ (none on iteration 1)."""
        updates = []
        for name, weight, q in self.layers:
            if q.grad_hat is None or q.w_tilde is None:
                continue
            g, w_tilde = q.grad_hat.reshape(-1), q.w_tilde.reshape(-1)
            state = self.lstm_state.get(name)
            if state is None and self.meta_net.stateful:
                state = self.meta_net.init_state(g.numel(), g)
            meta = MetaPass(self.meta_net, g, w_tilde, state, self.options.chunk_size)
            mg, new_state = meta.forward()
            if new_state is not None:
                self.lstm_state[name] = new_state
            cg = (q.calibration(weight) * mg.reshape(weight.shape)).requires_grad_()
            updates.append(_LayerUpdate(name, weight, q, meta, cg))
        return updates

    def _refine(self, u: _LayerUpdate) -> torch.Tensor:
        """W.grad ← calib ⊙ mg, then π of it (parked for ``optimizer.step()``)."""
        u.weight.grad = u.cg.detach()
        return self.optimizer.refine(u.weight)

    def _meta_backward(self, updates: list[_LayerUpdate]) -> None:
        """Step 5 up to Adam: ∂ℓ/∂mg = calib ⊙ ∂ℓ/∂cg, into φ. W is unchanged since step 2,
        so calib is recomputed rather than kept (one tensor of N floats less per layer)."""
        for u in updates:
            if u.cg.grad is None:  # the layer took no part in this forward
                continue
            u.meta.backward((u.cg.grad * u.quantizer.calibration(u.weight)).reshape(-1))

    def data_parallel(self, model: nn.Module) -> distributed.GradientAverager:
        """Several ranks: the step shares what depends on the data (module docstring) through this averager."""
        self.averager = distributed.GradientAverager(model)
        return self.averager

    def _share(self, loss: torch.Tensor, updating: bool) -> float:
        """Under several ranks: every data-dependent quantity of the step becomes the global batch's, in one
        weighted all-reduce; returns the (global) loss. A no-op alone."""
        if self.averager is None:
            return loss.item()
        meta_weights = {id(w) for _, w, _ in self.layers}
        shared = [q.grad_hat for _, _, q in self.layers if q.grad_hat is not None]
        if updating:  # on iteration 1 nothing is stepped: the gradients are dropped unread
            shared += [p.grad for p in self.meta_net.parameters() if p.grad is not None]
            shared += [p.grad for group in self.optimizer.param_groups for p in group["params"]
                       if p.grad is not None and id(p) not in meta_weights]
        loss = loss.reshape(1).clone()
        self.averager.average([*shared, *self.averager.statistics, loss])
        return loss.item()

    def _drop_unrefined_meta_grads(self, updates: list[_LayerUpdate]) -> None:
        """A meta weight without a meta-gradient this iteration is not updated (never by its STE grad)."""
        refined = {u.name for u in updates}
        for name, weight, _ in self.layers:
            if name not in refined:
                weight.grad = None

    def _metrics(self, loss: float, meta_trained: bool) -> dict[str, float]:
        extra: dict[str, float] = {}
        if meta_trained:
            grads = [p.grad for p in self.meta_net.parameters() if p.grad is not None]
            extra["meta_loss"] = loss
            extra["meta_grad_norm"] = float(torch.sqrt(sum((g * g).sum() for g in grads))) if grads else 0.0
        gain = self.meta_net.gain()
        if gain is not None:
            extra["meta_gain"] = gain[0]
            if self.meta_net_bias:
                extra["meta_offset"] = gain[1]
        return extra

    def frozen_codes_cause(self) -> tuple[str, str] | None:
        return (SIGN_FREEZE, SIGN_FREEZE_HINT) if self.freezes_signs else None

    def state_bytes(self) -> int:
        """Bytes MetaQuant keeps between iterations (g_Ŵ, W̃, LSTM state, stale π, φ and its Adam)."""
        captures = [(q.grad_hat, q.w_tilde) for _, _, q in self.layers]
        return tensor_bytes([captures, list(self.lstm_state.values()), list(self.stale.values()),
                             list(self.meta_net.parameters()), self.meta_optimizer.state_dict()["state"]])

    def epoch_end(self, epoch: int) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
        if self.meta_scheduler is not None:
            self.meta_scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        def sched(s):
            return s.state_dict() if s is not None else None

        layers = {name: {"grad_hat": q.grad_hat, "w_tilde": q.w_tilde, "lstm_state": self.lstm_state.get(name),
                         "stale": self.stale.get(name)} for name, _, q in self.layers}
        return {"iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": sched(self.scheduler), "meta_net": self.meta_net.state_dict(),
                "meta_optimizer": self.meta_optimizer.state_dict(),
                "meta_scheduler": sched(self.meta_scheduler), "layers": layers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [name for name, _, _ in self.layers]
        if sorted(state["layers"]) != sorted(names):
            raise ConfigError("the MetaQuant state does not match the model's meta-quantized layers",
                              hint="resume with the same model and quantization settings")
        self.iteration = int(state["iteration"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.meta_net.load_state_dict(state["meta_net"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        for sched, saved in ((self.scheduler, state["scheduler"]), (self.meta_scheduler, state["meta_scheduler"])):
            if sched is not None and saved is not None:
                sched.load_state_dict(saved)
        self.lstm_state, self.stale = {}, {}
        for name, weight, q in self.layers:  # checkpoints may be loaded onto another device
            saved, device = state["layers"][name], weight.device
            q.grad_hat, q.w_tilde = _on(saved["grad_hat"], device), _on(saved["w_tilde"], device)
            if saved["lstm_state"] is not None:
                self.lstm_state[name] = tuple(_on(t, device) for t in saved["lstm_state"])
            if saved["stale"] is not None:
                self.stale[name] = _on(saved["stale"], device)


def _on(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if t is None else t.to(device)
