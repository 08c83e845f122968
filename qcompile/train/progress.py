"""Progress display for finetuning: a rich bar per epoch, plus a one-line summary when it ends.

Kept apart from the loop so the loop only reports events and tests run silently: the loop talks
to a :class:`TrainProgress` or to :class:`NullProgress`, which share the same five methods.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_metrics(metrics: dict[str, Any]) -> str:
    """``loss 0.4321  acc 87.5%  lr 1.00e-02  code_flip_rate 0.0123%  meta_loss 0.12`` — accuracies and
    rates as percentages; the guard's ``warning`` is shown by :meth:`TrainProgress.warn`, not here."""
    parts = []
    for key, value in metrics.items():
        if value is None or key == "warning":
            continue
        if isinstance(value, float) and key.endswith("acc"):
            parts.append(f"{key} {100 * value:.1f}%")
        elif isinstance(value, float) and key.endswith("_rate"):
            parts.append(f"{key} {100 * value:.3g}%")
        elif key == "lr":
            parts.append(f"lr {value:.2e}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class NullProgress:
    """Shows nothing (``progress=False``)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_epoch(self, epoch: int, total: int, completed: int) -> None:
        """A new epoch of ``total`` batches begins (``completed`` already done when resuming)."""

    def advance(self, metrics: dict[str, Any]) -> None:
        """One batch done; ``metrics`` are running values to show."""

    def end_epoch(self, record: dict[str, Any]) -> None:
        """The epoch is over; ``record`` is its history entry."""

    def message(self, text: str) -> None:
        """A one-off line (e.g. 'resumed from step 120')."""

    def warn(self, text: str) -> None:
        """A problem the user should act on (e.g. the frozen-codes guard)."""


class TrainProgress(NullProgress):
    """A rich progress bar per epoch with running loss/acc/lr and the strategy's extra metrics."""

    def __init__(self, epochs: int, console: Console | None = None):
        self.epochs = epochs
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
        )
        self._task: Any = None

    def __enter__(self) -> TrainProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, total: int, completed: int) -> None:
        self._task = self._progress.add_task(
            "train", total=total, completed=completed, epoch=epoch + 1, epochs=self.epochs, stats=""
        )

    def advance(self, metrics: dict[str, Any]) -> None:
        self._progress.update(self._task, advance=1, stats=format_metrics(metrics))

    def end_epoch(self, record: dict[str, Any]) -> None:
        shown = {k: v for k, v in record.items() if k not in ("epoch", "seconds")}
        self._progress.console.print(
            f"epoch {record['epoch'] + 1}/{self.epochs}  {format_metrics(shown)}  ({record['seconds']:.1f}s)"
        )

    def message(self, text: str) -> None:
        self._progress.console.print(text)

    def warn(self, text: str) -> None:
        self._progress.console.print(f"[bold yellow]warning:[/] {escape(text)}")


def make_progress(enabled: bool, epochs: int, console: Console | None = None) -> NullProgress:
    """A :class:`TrainProgress` when ``enabled``, otherwise a silent :class:`NullProgress`."""
    return TrainProgress(epochs, console) if enabled else NullProgress()
