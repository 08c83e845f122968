"""Data-parallel runs on torch.distributed: process-group setup from torchrun's environment, and the
few collectives the training loop needs.

Why it looks like this:
- ``torchrun`` (``torch.distributed.run``) starts one process per rank and sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; :func:`setup` reads only those, so a
  plain ``qcompile ...`` (no torchrun) stays a single process and never touches torch.distributed.
- gloo on CPU, NCCL on CUDA (one GPU per rank, picked by ``LOCAL_RANK``).
- Every collective has a timeout (``--dist-timeout``): a rank that died or raised makes the others
  fail with an error after that long instead of hanging forever; torchrun then ends the job, and
  the failing rank's own error is what it reports.
- Gradients are averaged by an explicit all-reduce (:class:`GradientAverager`: an optimizer step
  pre-hook, or called by a strategy with its own update, e.g. one training a meta-network) rather
  than by wrapping the model in ``DistributedDataParallel``: the step belongs to a strategy that holds
  the fx GraphModule itself (its state_dict keys, its quantizer modules) and may need more than
  parameter gradients shared, and weighting each rank by its sample count keeps the averaged gradient
  equal to the full global batch's even when the last batch splits unevenly. The cost: no overlap of
  communication with the backward pass (DDP's buckets) — one flat all-reduce per step.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist

from qcompile.errors import ConfigError

DEFAULT_TIMEOUT_S = 300.0


def launched() -> bool:
    """Started by torchrun with more than one rank?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Is a process group of more than one rank set up in this process?"""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and draws progress."""
    return rank() == 0


def setup(timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun describes (no-op outside torchrun or if already joined).

    Returns whether this process is now part of a group of more than one rank."""
    if not launched() or active():
        return active()
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed", hint="run without torchrun, or install a torch "
                          "build with distributed support")
    if timeout_s <= 0:
        raise ConfigError(f"--dist-timeout must be > 0 seconds, got {timeout_s}", hint="e.g. --dist-timeout 300")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True


def split_threads() -> str | None:
    """CPU ranks share a node's cores: with ``OMP_NUM_THREADS`` unset, torch's threads per rank become
    cores // ranks on this node (at least 1). Returns a note for the user, or None when nothing is to say.

    ``torchrun --nproc-per-node N`` (N > 1) itself sets ``OMP_NUM_THREADS=1`` when it is unset, before the
    ranks start, so they cannot tell its default from a user's choice: then the threads are left alone
    and the note says how many cores stay idle."""
    if torch.cuda.is_available():
        return None
    cores, local = _cores(), max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    fair = max(1, cores // local)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(fair)
        os.environ["OMP_NUM_THREADS"] = str(fair)  # for any process a rank starts
        return f"OMP_NUM_THREADS unset: {fair} thread(s) per rank ({cores} cores, {local} rank(s) on this node)"
    threads = torch.get_num_threads()
    if threads < fair:
        return (f"{threads} thread(s) per rank use {threads * local} of {cores} cores (torchrun sets "
                f"OMP_NUM_THREADS=1 when it is unset): launch with OMP_NUM_THREADS={fair}, or with "
                f"qcompile --nproc {local}, to use them all")
    return None


def launch_command(nproc: int, argv: Sequence[str]) -> tuple[list[str], dict[str, str], str | None]:
    """``qcompile --nproc N ARGS``: the torchrun command that runs ``qcompile ARGS`` on N local ranks, its
    environment, and a note. Unlike plain torchrun (whose default is 1 thread per rank), an unset
    ``OMP_NUM_THREADS`` becomes cores // N on CPU, decided here where "unset" can still be seen."""
    if launched():
        raise ConfigError("--nproc was given to a process torchrun already started",
                          hint="drop --nproc: torchrun's --nproc-per-node already set the number of ranks")
    env, note = dict(os.environ), None
    if "OMP_NUM_THREADS" not in env and not torch.cuda.is_available():
        fair = max(1, _cores() // nproc)
        env["OMP_NUM_THREADS"] = str(fair)
        note = f"OMP_NUM_THREADS unset: {fair} thread(s) per rank ({_cores()} cores, {nproc} ranks)"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "qcompile", *argv]
    return command, env, note


def _cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def teardown(clean: bool | None = None) -> None:
    """Leave the process group (harmless when none was joined).

    On a clean exit the ranks first meet at a barrier, so none closes its gloo connections while a peer still
    works (rank 0 often writes files after the others are done): a rank that destroyed its group and exited
    under a peer's open connections was seen to abort in ``std::terminate``. After an error there is no
    barrier (a peer may be blocked in another collective; torchrun ends the job). ``clean=None`` reads it from
    the exception being handled, if any (as in a click close callback: ``Exit(0)`` is clean). The group's
    objects are then collected while the interpreter is still whole, not during its finalisation."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean is None:
        error = sys.exc_info()[1]
        clean = error is None or getattr(error, "exit_code", None) == 0
    if clean and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def run_rank(entry: Callable[[], object]) -> NoReturn:
    """Run a rank's command, then leave the process at once with its exit code.

    By the time ``entry`` returns, the command has left the process group (:func:`teardown`) and written
    its files atomically; what remains is the interpreter's finalisation, where a C++ thread of the
    distributed backend destroyed while still joinable aborts a finished rank (``std::terminate``, SIGABRT)
    once in a while — torchrun then reports a job whose work was done as failed. So the rank flushes its
    output and logs and ends with ``os._exit``. An exception other than ``SystemExit`` (a bug: click
    already turned user errors into exit codes) propagates as usual, with its traceback."""
    try:
        entry()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    if not isinstance(code, int):  # SystemExit("message") prints the message and exits 1, as Python does
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def refuse(what: str) -> None:
    """Raise a ConfigError when ``what`` (a loop not yet data-parallel) is asked to run on several ranks."""
    if launched() or active():
        raise ConfigError(f"{what} does not run data-parallel yet (WORLD_SIZE={os.environ.get('WORLD_SIZE')})",
                          hint="run it as a single process (without torchrun, or --nproc-per-node 1)")


def shard(indices: np.ndarray) -> np.ndarray:
    """This rank's contiguous slice of one global batch (``np.array_split``: sizes differ by at most one)."""
    return np.array_split(indices, world_size())[rank()]


def check_batches(n: int, batch_size: int) -> None:
    """Every global batch must give each rank at least one sample (a rank with none cannot step)."""
    world = world_size()
    if world == 1:
        return
    last = n % batch_size or batch_size
    if batch_size < world or last < world:
        raise ConfigError(
            f"--batch-size {batch_size} (the global batch) on {n} samples leaves a batch of "
            f"{min(batch_size, last)} sample(s) for {world} ranks",
            hint=f"use a global batch size >= {world} whose last batch ({n} mod batch size) is 0 or >= {world}")


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_values(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64), identical on every rank."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.tolist()


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not active():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has checked or written a file the others then read)."""
    if active():
        dist.barrier()


def reduce_range(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(min of the ranks' ``lo``, max of the ranks' ``hi``): one observed batch's range over all ranks.

    One all-reduce, not two (it runs at every observer on every step): the max of (−lo, hi); negation is exact."""
    if not active():
        return lo, hi
    both = torch.stack([-lo.detach(), hi.detach()]).to(_device())
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return -both[0], both[1]


class GradientAverager:
    """Makes every rank's gradients the global batch's: each is replaced by the sum over ranks of
    ``weight`` × the local one, ``weight`` being this rank's samples / the global batch's (the loop sets
    it before each step). Losses are means over a batch, so this is the full-batch gradient.

    Given an ``optimizer``, it runs as that optimizer's step pre-hook on every gradient the step will use
    (all but ``exclude``, parameters whose gradients are the same on every rank by construction);
    a strategy with its own update calls :meth:`average` on what it needs instead.

    BatchNorm running statistics get the same weighted average, so every rank keeps the same ones (DDP
    would instead copy rank 0's): the running mean is then the global batch's exactly; the running
    variance is the mean of the ranks' variances, which omits the spread between the ranks' means.
    Normalisation inside a training step still uses each rank's own batch statistics."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 exclude: Sequence[torch.Tensor] = ()):
        self.weight = 1.0 / world_size()
        self.statistics = [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                           for b in (m.running_mean, m.running_var) if b is not None]
        self.exclude = {id(p) for p in exclude}
        if optimizer is not None:
            self.handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.average(
                self.gradients(opt) + self.statistics))

    def gradients(self, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        """The gradients ``optimizer`` would step with, in its (rank-independent) parameter order."""
        # Every rank ran the same graph, so the same parameters have gradients, in the same order.
        return [p.grad for group in optimizer.param_groups for p in group["params"]
                if p.grad is not None and id(p) not in self.exclude]

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """In place: each tensor ← Σ over ranks of ``weight`` × it (one flat all-reduce, float32)."""
        if not tensors or not active():
            return
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors]).mul_(self.weight)
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.data.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
