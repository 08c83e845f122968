"""The finetuning loop: data order, devices, evaluation, checkpoints, callbacks and progress.

What it guarantees:
1. Repeatable: global RNGs are seeded from ``config.seed`` and each epoch's data order is a
   permutation drawn from a generator seeded with ``(seed, epoch)`` — independent of history.
2. Resumable bitwise: a checkpoint holds model, strategy state, position (epoch, step in
   epoch), running epoch sums, history and RNG states; a resumed run skips the batches already
   done in the current epoch's permutation and continues exactly as if never interrupted.
3. The step itself belongs to a :class:`~qcompile.train.strategy.StepStrategy`; the loop never
   touches optimizers.
4. What outputs mean belongs to a :class:`~qcompile.tasks.Task` (default: classification): how
   numpy arrays become tensors, the loss, per-batch metrics and the evaluation summary. The loop
   only sums what the task reports: ``train_<metric>`` and ``test_<metric>`` in history.
5. Checked before it costs anything: on the first forward, before its loss, the task checks every
   train and test label against the outputs (:meth:`~qcompile.tasks.Task.check_targets`).
6. Finite or stopped: a non-finite loss, or non-finite weights about to be checkpointed, raise
   :class:`~qcompile.errors.TrainingDiverged` (see :mod:`qcompile.train.divergence`); the last good
   checkpoint stays as it was.
7. Every epoch of a model with quantized weights records ``code_flip_rate``, the fraction of weight
   codes the epoch changed, and warns when codes froze while the loss is still high, naming the
   strategy's likely cause (:mod:`.code_flips`): on the progress and as ``warning`` in each flagged
   epoch's record, and once per run as a :class:`~qcompile.train.code_flips.FrozenCodesWarning`.
8. Data-parallel under torchrun: each rank trains on its shard of every global batch, and the strategy's
   gradient averager makes the update the full batch's (:mod:`qcompile.train.data_parallel`); rank 0
   alone checkpoints and draws progress.
9. From epoch ``config.freeze_bn_after`` on, every BatchNorm is put in eval mode at each epoch's start (frozen
   running statistics; again after a resume), so BN folds into its op and an ``ort-int8`` model trains the
   integer kernels' forward (:func:`~qcompile.train.batchnorm_stats.freeze_batchnorm`).

Callbacks ``cb(event, state)`` get ``'step_end'`` after every step and ``'epoch_end'`` after each
epoch (after evaluation), both before that point's checkpoint is written, so changes a callback
makes to the model's state_dict are saved. Side effects outside the state_dict (Python flags,
module train/eval modes) are not restored on resume: re-derive them from ``state.epoch``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qcompile import distributed
from qcompile.errors import ConfigError
from qcompile.tasks import Task, get_task
from qcompile.train import checkpoint as ckpt
from qcompile.train.batches import Batches, check_dataset
from qcompile.train.batchnorm_stats import freeze_batchnorm
from qcompile.train.code_flips import Snapshot, annotate_epoch, code_snapshot
from qcompile.train.config import TrainConfig, resolve_device
from qcompile.train.data_parallel import data_parallel
from qcompile.train.evaluation import evaluate
from qcompile.train.divergence import diverged, first_non_finite
from qcompile.train.objective import LabelsChecked, make_objective
from qcompile.train.progress import make_progress
from qcompile.train.strategy import StandardStep, StepStrategy
from qcompile.train.sync_batchnorm import synchronised_batchnorm


@dataclass
class TrainState:
    """What a callback sees. ``metrics``: the step's values (step_end) or the epoch's record (epoch_end)."""

    model: nn.Module
    epoch: int
    global_step: int
    step_in_epoch: int
    metrics: dict[str, Any]
    strategy: StepStrategy
    config: TrainConfig


Callback = Callable[[str, TrainState], None]


@dataclass
class TrainResult:
    """Per-epoch history ({epoch, train_loss, train_<metric>, test_<metric>, test_loss, lr, seconds},
    and with quantized weights ``code_flip_rate`` plus ``warning`` on an epoch the frozen-codes guard
    flagged; classification's metric is ``acc``), per-step records of the strategy's extra metrics
    ({step, epoch, ...}), and the outcome: ``final_test`` is the task's evaluation summary of the
    model as returned (None without a test set)."""

    history: list[dict[str, Any]]
    step_records: list[dict[str, Any]]
    final_test: dict[str, float] | None
    steps: int
    seconds: float
    completed: bool

    @property
    def final_test_acc(self) -> float | None:
        """Classification's final test accuracy (None without a test set or for other tasks)."""
        return None if self.final_test is None else self.final_test.get("acc")

    @property
    def final_test_loss(self) -> float | None:
        return None if self.final_test is None else self.final_test.get("loss")

    @property
    def warnings(self) -> list[str]:
        """The guard's warnings, one per flagged epoch ("epoch N: ...")."""
        return [f"epoch {r['epoch'] + 1}: {r['warning']}" for r in self.history if r.get("warning")]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of ``epoch``: a function of (seed, epoch) only, so resume reproduces it."""
    mixed = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(mixed))
    return torch.randperm(n, generator=generator).numpy()


@dataclass
class _Run:
    """The loop's position and running sums: exactly what a checkpoint must restore."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    step_records: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    epoch_seconds: float = 0.0
    epoch_codes: Snapshot | None = None  # weight codes at the start of the current epoch

    FIELDS = ("epoch", "step_in_epoch", "global_step", "history", "step_records", "sums", "count",
              "epoch_seconds", "epoch_codes")
    OPTIONAL = {"epoch_codes": None}  # fields a checkpoint from an older version may lack

    def add(self, metrics: dict[str, float], n: int) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value) * n
        self.count += n

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.sums, self.count, self.epoch_seconds = {}, 0, 0.0
        self.epoch_codes = None

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> _Run:
        return cls(**{name: payload[name] if name in payload else cls.OPTIONAL[name] for name in cls.FIELDS})


def finetune(
    model: nn.Module,
    train: Any,
    test: Any = None,
    config: TrainConfig | None = None,
    strategy: StepStrategy | None = None,
    teacher: nn.Module | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    task: Task | str | None = None,
) -> TrainResult:
    """Finetune ``model`` on ``train`` (any object with numpy ``.x``/``.y``); see the module docstring.

    ``strategy`` defaults to :class:`StandardStep`, ``task`` to classification. The model is left
    on the training device, in train mode.
    """
    config = config or TrainConfig()
    task = get_task(task)
    _check_arguments(config, teacher, checkpoint_dir, resume)
    task.check_distillation(config.kd_alpha)
    started = time.perf_counter()
    device = resolve_device(config.device)
    ckpt.seed_everything(config.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device)
    strategy = strategy if strategy is not None else StandardStep()
    strategy.setup(model, config)
    batches = Batches(train, config.batch_size, device, config.mean, config.std, task)
    strategy.plan_steps(len(batches))
    if test is not None:
        check_dataset(test, "test")
    path = ckpt.checkpoint_path(checkpoint_dir) if checkpoint_dir is not None else None
    run = _restore(path, model, strategy, config, batches) if resume else _Run()
    parallel = data_parallel(model, strategy, len(batches.y), config.batch_size, config.seed, run.global_step)
    trainer = _Trainer(model, batches, test, config, strategy, teacher, path, run, tuple(callbacks), device, parallel)
    with make_progress(progress and distributed.is_main(), config.epochs) as display:
        if resume:
            display.message(f"resumed at epoch {run.epoch + 1}, step {run.global_step}")
        with synchronised_batchnorm(model, parallel.averager if parallel and config.sync_bn else None):
            trainer.train(display)
    return TrainResult(
        history=run.history,
        step_records=run.step_records,
        final_test=trainer.final_test(),
        steps=run.global_step,
        seconds=time.perf_counter() - started,
        completed=run.epoch >= config.epochs,
    )


class _Trainer:
    """The epoch/step iteration of :func:`finetune`, with everything it needs bound once."""

    def __init__(self, model, batches, test, config, strategy, teacher, path, run, callbacks, device, parallel=None):
        self.model, self.batches, self.test, self.config = model, batches, test, config
        self.strategy, self.path, self.run, self.parallel = strategy, path, run, parallel
        self.callbacks, self.device = callbacks, device
        self.task = batches.task
        labels = {"train": batches.y, **({"test": test.y} if test is not None else {})}
        self.objective = LabelsChecked(make_objective(teacher, config.kd_alpha, config.kd_temperature, self.task),
                                       self.task, labels)
        self._saved_at = self._position()  # a fresh start needs no save; a resume is already saved

    def train(self, display) -> None:
        run, config = self.run, self.config
        while run.epoch < config.epochs and not self._at_max_steps():
            if run.epoch_codes is None:
                run.epoch_codes = code_snapshot(self.model)
            display.start_epoch(run.epoch, len(self.batches), run.step_in_epoch)
            self._train_epoch(display)
            if run.step_in_epoch < len(self.batches):
                display.message(f"stopped at max_steps={config.max_steps} (epoch {run.epoch + 1})")
                break
            self._finish_epoch(display)
        self._save()  # no-op when the last checkpoint is already at this position

    def _train_epoch(self, display) -> None:
        """Remaining batches of the current epoch, or until max_steps."""
        run, strategy = self.run, self.strategy
        mark = time.perf_counter()
        order = epoch_permutation(len(self.batches.y), self.config.seed, run.epoch)
        if self.config.batchnorm_frozen(run.epoch):  # again each epoch: a resume starts in train mode
            freeze_batchnorm(self.model)
        parallel = self.parallel
        select = parallel.select if parallel is not None else None
        for inputs, targets in self.batches.in_order(order, start=run.step_in_epoch, select=select):
            n = parallel.global_count(order, run.step_in_epoch, len(targets)) if parallel else len(targets)
            out = strategy.step(self.model, inputs, targets, self.objective)
            with torch.no_grad():
                metrics = {"loss": out.loss, **self.task.batch_metrics(out.outputs, targets)}
            if parallel is not None:  # the global batch's means, the same on every rank
                metrics = parallel.global_means(metrics, len(targets), n)
            if not math.isfinite(metrics["loss"]):
                raise self._diverged(f"the training loss became {metrics['loss']}")
            run.add(metrics, n)
            run.step_in_epoch += 1
            run.global_step += 1
            extra = dict(strategy.extra_metrics)
            if extra:
                run.step_records.append({"step": run.global_step, "epoch": run.epoch, **extra})
            now = time.perf_counter()
            run.epoch_seconds += now - mark
            mark = now
            self._emit("step_end", {**metrics, "lr": strategy.lr})
            display.advance({**run.means(), "lr": strategy.lr, **extra})
            if self.config.checkpoint_every and run.global_step % self.config.checkpoint_every == 0:
                self._save()
            if self._at_max_steps():
                break

    def _finish_epoch(self, display) -> None:
        """Evaluate, advance the strategy's schedule, record, notify, checkpoint."""
        run = self.run
        mark = time.perf_counter()
        tested = self.evaluate_test() if self.config.should_evaluate(run.epoch) else None
        run.epoch_seconds += time.perf_counter() - mark
        record = _epoch_record(run, self.task, self.strategy.lr, tested)
        warning = annotate_epoch(record, run.epoch_codes, self.model, run.history, self.strategy.frozen_codes_cause())
        if warning is not None:
            display.warn(str(warning))
            if not any(r.get("warning") for r in run.history):  # a Python warning once per run, at its first
                warnings.warn(warning, stacklevel=4)
        self.strategy.epoch_end(run.epoch)
        run.history.append(record)
        self._emit("epoch_end", record)
        display.end_epoch(record)
        run.next_epoch()
        self._save()

    def evaluate_test(self) -> dict[str, float] | None:
        if self.test is None:
            return None
        c = self.config
        return evaluate(self.model, self.test, c.batch_size, self.device, c.mean, c.std, self.task)

    def final_test(self) -> dict[str, float] | None:
        """Test summary of the model as returned: the last epoch's, or evaluated now if stopped early."""
        last = self.run.history[-1] if self.run.history else None
        if self.run.step_in_epoch > 0 or last is None or last.get("test_loss") is None:
            return self.evaluate_test()
        return {key: last[f"test_{key}"] for key in self.task.empty_summary()}

    def _at_max_steps(self) -> bool:
        return self.config.max_steps is not None and self.run.global_step >= self.config.max_steps

    def _emit(self, event: str, metrics: dict[str, Any]) -> None:
        run = self.run
        state = TrainState(self.model, run.epoch, run.global_step, run.step_in_epoch, metrics,
                           self.strategy, self.config)
        for callback in self.callbacks:
            callback(event, state)

    def _position(self) -> tuple[int, int, int]:
        return self.run.epoch, self.run.step_in_epoch, self.run.global_step

    def _diverged(self, what: str):
        """The error for the step just taken (not yet counted in ``run``)."""
        run = self.run
        where = (f"epoch {run.epoch + 1}, step {run.step_in_epoch + 1} of {len(self.batches)} "
                 f"(step {run.global_step + 1} of the run)")
        return diverged(what, where, self.config, self.path)

    def _save(self) -> None:
        position = self._position()
        if self.path is None or position == self._saved_at or not distributed.is_main():
            return
        bad = first_non_finite(self.model.state_dict())
        if bad is not None:  # never write a NaN model over the last good checkpoint
            raise diverged(f"the weights became non-finite ({bad!r})",
                           f"the checkpoint after step {self.run.global_step} of the run", self.config, self.path)
        ckpt.save_checkpoint(self.path, _payload(self.model, self.strategy, self.config, self.run, self.batches))
        self._saved_at = position


def _epoch_record(run: _Run, task: Task, lr: float, tested: dict[str, float] | None) -> dict[str, Any]:
    """``epoch``, ``train_loss``, ``train_<metric>`` (the task's, then any other), ``test_<key>`` of the
    task's summary (None when not evaluated), ``lr``, ``seconds``."""
    means = run.means()
    trained = ("loss", *task.metrics)
    record: dict[str, Any] = {"epoch": run.epoch, **{f"train_{k}": means.get(k) for k in trained}}
    record.update({f"train_{k}": v for k, v in means.items() if k not in trained})
    record.update({f"test_{k}": v for k, v in (tested or task.empty_summary()).items()})
    record.update({"lr": lr, "seconds": run.epoch_seconds})
    return record


def _payload(model: nn.Module, strategy: StepStrategy, config: TrainConfig, run: _Run, batches: Batches) -> dict:
    return {
        "format": ckpt.FORMAT_VERSION,
        "model": model.state_dict(),
        "strategy": strategy.state_dict(),
        "config": config.to_dict(),
        "task": batches.task.name,
        "n_train": len(batches.y),
        "rng": ckpt.capture_rng(),
        **run.state_dict(),
    }


def _restore(
    path: Path | None, model: nn.Module, strategy: StepStrategy, config: TrainConfig, batches: Batches
) -> _Run:
    assert path is not None  # guaranteed by _check_arguments
    payload = ckpt.load_checkpoint(path)
    ckpt.check_compatible(payload, config.to_dict(), list(model.state_dict()), len(batches.y), batches.task.name)
    model.load_state_dict(payload["model"])
    strategy.load_state_dict(payload["strategy"])
    ckpt.restore_rng(payload["rng"])
    return _Run.from_payload(payload)


def _check_arguments(
    config: TrainConfig, teacher: nn.Module | None, checkpoint_dir: Any, resume: bool
) -> None:
    if config.kd_alpha > 0 and teacher is None:
        raise ConfigError(
            f"kd_alpha={config.kd_alpha} asks for knowledge distillation but no teacher was given",
            hint="pass teacher=<the float model>, or set kd_alpha=0",
        )
    if checkpoint_dir is None and (resume or config.checkpoint_every):
        what = "resume=True" if resume else f"checkpoint_every={config.checkpoint_every}"
        raise ConfigError(
            f"{what} needs a checkpoint_dir", hint="pass checkpoint_dir=<a directory for checkpoint.pt>"
        )
