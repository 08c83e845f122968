"""One rank of the data-parallel tests (tests/test_distributed.py), started by torch.distributed.run.

``python ddp_worker.py SCENARIO OUT_DIR [ARGS]`` — also runs as a single process (no torchrun), which is how the
tests get the reference each data-parallel run must match. Scenarios:
- ``step``: one step on a global batch of 5 (split 3 + 2); every rank saves its gradients and ranges, and
  the BatchNorm running statistics of the same step on a model with BatchNorm.
- ``syncbn``: the same step with ``sync_bn`` on a model with BatchNorm.
- ``train STEPS [resume]``: train towards 2 epochs with checkpoints in OUT_DIR/ckpt, stop at STEPS steps.
- ``raise``: rank 1 raises during its first step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from qcompile import distributed
from qcompile.quantizers.activation import ActivationQuantizer
from qcompile.train import TrainConfig, finetune


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), ActivationQuantizer(8, signed=True), nn.ReLU(), nn.Linear(8, 3))


def tiny_data(n: int = 10) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    spread = np.arange(1, n + 1, dtype=np.float32)[:, None]  # ranks' shards get different ranges
    return SimpleNamespace(x=rng.normal(size=(n, 4)).astype(np.float32) * spread,
                           y=rng.integers(0, 3, size=n).astype(np.int64))


def main(scenario: str, out: Path, *args: str) -> None:
    distributed.setup(timeout_s=20)
    rank = distributed.rank()
    model = tiny_model()
    if scenario == "step":
        seen = {}

        def grab(event, state):
            if event == "step_end":
                seen["grads"] = {k: p.grad.clone() for k, p in model.named_parameters()}

        config = TrainConfig(batch_size=5, lr=0.1, max_steps=1, device="cpu", seed=3)
        finetune(model, tiny_data(), config=config, progress=False, callbacks=[grab])
        q = model[1]
        torch.manual_seed(0)
        bn_model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
        finetune(bn_model, tiny_data(), config=config, progress=False)
        bn = bn_model[1]
        torch.save({**seen, "range": (float(q.running_min), float(q.running_max)), "world": distributed.world_size(),
                    "bn": (bn.running_mean.clone(), bn.running_var.clone())}, out / f"step-rank{rank}.pt")
    elif scenario == "syncbn":
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        seen = {}

        def grab(event, state):
            if event == "step_end":
                seen["grads"] = {k: p.grad.clone() for k, p in model.named_parameters()}

        config = TrainConfig(batch_size=5, lr=0.1, max_steps=1, device="cpu", seed=3, sync_bn=True)
        finetune(model, tiny_data(), config=config, progress=False, callbacks=[grab])
        assert type(model[1]) is nn.BatchNorm1d  # the class swapped for training is back
        torch.save({**seen, "bn": (model[1].running_mean.clone(), model[1].running_var.clone())},
                   out / f"syncbn-rank{rank}.pt")
    elif scenario == "train":
        config = TrainConfig(epochs=2, batch_size=4, lr=0.1, momentum=0.9, device="cpu", seed=3,
                             max_steps=int(args[0]), checkpoint_every=1)
        result = finetune(model, tiny_data(), config=config, progress=False, checkpoint_dir=out / "ckpt",
                          resume=len(args) > 1 and args[1] == "resume")
        if distributed.is_main():
            torch.save({"model": model.state_dict(), "steps": result.steps, "history": result.history},
                       out / f"train-{args[0]}-world{distributed.world_size()}.pt")
    elif scenario == "raise":
        def fail(event, state):
            if rank == 1:
                raise RuntimeError("rank 1 failed on purpose")

        finetune(model, tiny_data(), config=TrainConfig(batch_size=4, device="cpu", max_steps=3),
                 progress=False, callbacks=[fail])
    distributed.teardown()


if __name__ == "__main__":
    distributed.run_rank(lambda: main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:]))
