"""Progress of a synthesis: a rich bar per batch of images being optimised, or nothing (tests, ``--json``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from qcompile.train.progress import format_metrics


class NullSynthesisProgress:
    """Shows nothing; :class:`SynthesisProgress` has the same methods."""

    def __enter__(self) -> NullSynthesisProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_batch(self, batch: int, batches: int, steps: int) -> None:
        """Batch ``batch`` (0-based) of ``batches`` starts; it runs ``steps`` optimiser steps."""

    def advance(self, metrics: dict[str, Any]) -> None:
        """One step done; ``metrics`` are the current losses."""

    def end_batch(self, summary: dict[str, Any]) -> None:
        """The batch is finished (and checkpointed); ``summary`` is its record."""

    def message(self, text: str) -> None:
        """A one-off line (e.g. 'resumed after batch 3')."""


class SynthesisProgress(NullSynthesisProgress):
    def __init__(self, console: Console | None = None):
        self._progress = Progress(TextColumn("[bold]batch {task.fields[batch]}/{task.fields[batches]}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                  TextColumn("{task.fields[stats]}"), console=console)
        self._task: Any = None

    def __enter__(self) -> SynthesisProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def start_batch(self, batch: int, batches: int, steps: int) -> None:
        self._task = self._progress.add_task("synthesize", total=steps, batch=batch + 1, batches=batches, stats="")

    def advance(self, metrics: dict[str, Any]) -> None:
        self._progress.update(self._task, advance=1, stats=format_metrics(metrics))

    def end_batch(self, summary: dict[str, Any]) -> None:
        shown = {k: v for k, v in summary.items() if k not in ("batch", "seconds", "images", "bns_per_layer")}
        self._progress.console.print(f"batch {summary['batch'] + 1}: {summary['images']} images  "
                                     f"{format_metrics(shown)}  ({summary['seconds']:.1f}s)")

    def message(self, text: str) -> None:
        self._progress.console.print(text)


def make_progress(enabled: bool, console: Console | None = None) -> NullSynthesisProgress:
    return SynthesisProgress(console) if enabled else NullSynthesisProgress()
