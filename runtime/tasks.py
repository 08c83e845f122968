"""What a deployed model's outputs mean: the numpy half of a task, registered by name.

A task (classification, a learned codec, a dynamic-precision classifier) decides how outputs are
scored against targets. The compiler's side of a task (``qcompile.tasks``: batch format, training
objective, metrics) needs torch; scoring finished outputs does not, so that part lives here, where
the torch-free ``qcompile run`` and the compiler's ORT-vs-PyTorch parity check both find it:

* :meth:`RuntimeTask.targets` — what outputs are compared with (labels for a classifier; a codec
  compares with its input images);
* :meth:`RuntimeTask.report` — what ``qcompile run`` reports for a model's outputs on a test split;
* :meth:`RuntimeTask.parity` — how far onnxruntime's outputs are from PyTorch's on the same inputs.

A new task subclasses :class:`RuntimeTask` and calls :func:`register_runtime_task`; nothing else changes.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from qcompile.runtime.errors import TaskError

Rows = list[tuple[str, str]]  # (label, formatted value) pairs, for a two-column summary table


class RuntimeTask(abc.ABC):
    """Scores a model's outputs (numpy) against targets; see the module docstring."""

    name: ClassVar[str] = ""

    def targets(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """What outputs are scored against, from a dataset's inputs ``x`` and labels ``y``. Default: ``y``."""
        del x
        return y

    @abc.abstractmethod
    def report(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """JSON-ready figures of ``outputs`` against ``targets`` (what ``qcompile run`` prints)."""

    @abc.abstractmethod
    def parity(self, reference: np.ndarray, deployed: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """JSON-ready comparison of ``deployed`` (onnxruntime) with ``reference`` (PyTorch) outputs."""

    @abc.abstractmethod
    def report_rows(self, report: dict[str, Any]) -> Rows:
        """The figures of :meth:`report` (found in ``report``, which may hold more) as labelled values."""

    @abc.abstractmethod
    def parity_rows(self, parity: dict[str, Any]) -> Rows:
        """The figures of :meth:`parity` (found in ``parity``, which may hold more) as labelled values."""


class ClassificationMeasures(RuntimeTask):
    """Top-1 accuracy of logits ``(N, classes)`` against int labels ``(N,)``; parity in logits and top-1."""

    name = "classification"

    def targets(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Class indices: ``y``, or the arg-max of soft-label rows (a synthetic pool's)."""
        del x
        y = np.asarray(y)
        return y.argmax(axis=1) if y.ndim == 2 else y

    def report(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """``accuracy`` (in [0, 1]), ``correct`` and ``samples``."""
        correct = int((_top1(outputs, targets) == targets).sum())
        return {"accuracy": correct / len(targets), "correct": correct, "samples": len(targets)}

    def parity(self, reference: np.ndarray, deployed: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        """``acc_torch``, ``acc_ort``, ``max_abs_diff`` (largest |ORT − PyTorch| logit) and ``agreement``
        (fraction of samples with the same top-1)."""
        top_ref, top_dep = _top1(reference, targets), _top1(deployed, targets)
        return {
            "acc_torch": float(np.mean(top_ref == targets)),
            "acc_ort": float(np.mean(top_dep == targets)),
            "max_abs_diff": float(np.max(np.abs(deployed.astype(np.float64) - reference))),
            "agreement": float(np.mean(top_ref == top_dep)),
        }

    def report_rows(self, report: dict[str, Any]) -> Rows:
        return [("accuracy", f"{_pct(report['accuracy'])} ({report['correct']:,}/{report['samples']:,})")]

    def parity_rows(self, parity: dict[str, Any]) -> Rows:
        samples = f" on {parity['samples']} test samples" if "samples" in parity else ""
        return [("quantized accuracy (onnxruntime)", f"{_pct(parity['acc_ort'])}{samples}"),
                ("max |ORT − PyTorch| logit", f"{parity['max_abs_diff']:.2e}")]


def _top1(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Arg-max per row, after checking that ``outputs`` are one row of scores per target."""
    if outputs.ndim != 2 or len(outputs) != len(targets):
        raise TaskError(
            f"a classifier's outputs must be (samples, classes) scores for {len(targets)} samples, "
            f"got shape {tuple(outputs.shape)}",
            hint="score this model with the task it was trained for (classification expects one logit per class)",
        )
    return outputs.argmax(1)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


_REGISTRY: dict[str, RuntimeTask] = {}


def register_runtime_task(task: type[RuntimeTask] | RuntimeTask) -> type[RuntimeTask] | RuntimeTask:
    """Make ``task`` (a class with a ``name``, or an instance) available by name; usable as a decorator."""
    instance = task() if isinstance(task, type) else task
    if not instance.name:
        raise ValueError(f"{type(instance).__name__} has no name")
    _REGISTRY[instance.name] = instance
    return task


def available_runtime_tasks() -> list[str]:
    return sorted(_REGISTRY)


def get_runtime_task(name: str) -> RuntimeTask:
    """The registered task called ``name``; an unknown name is a :class:`TaskError` listing the known ones."""
    if name not in _REGISTRY:
        raise TaskError(f"unknown task {name!r}", hint=f"use one of: {', '.join(available_runtime_tasks())}")
    return _REGISTRY[name]


register_runtime_task(ClassificationMeasures)
