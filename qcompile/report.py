"""Training curves of several runs: read them, group seeds, summarise, and draw one PNG.

A run's records are what ``qcompile compile``/``finetune`` leave in ``RUN_DIR/history.json``:
``history`` (one record per epoch: epoch, train_loss, train_acc, test_acc, test_loss, lr, seconds)
and, for methods with per-step metrics (a meta-network's loss, say), ``steps`` (step, epoch, meta_loss,
meta_grad_norm, meta_gain, ..., numbered across the run's training calls by :func:`merge_steps`).
A *series* is one run's list of such records; its x axis is the epoch (1-based, counted over every
training call of the run) for epoch records and the step for step records, so the same functions
plot an accuracy curve and the learned FC-Grad gain. Benchmarks call :func:`summarise` and
:func:`plot_curves` directly with the ``history`` (a series per run) of a ``TrainResult``.

Seeds of one configuration share a label (``history.json``'s ``label``), so a group is "the same
experiment, several seeds": the figure draws its mean curve with the min–max band over seeds,
like the comparison figures of method papers. Statistics use the sample standard
deviation (n − 1; 0 for a single value) because a group is a handful of seeds, not a population.

matplotlib (Agg backend) is imported only when a figure is drawn: reading and summarising stay
cheap, and nothing here needs a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qcompile.errors import ConfigError

HISTORY = "history.json"
GROUP_BY = ("label", "parent", "run")

Series = Sequence[Mapping[str, Any]]  # one run's epoch records or step records


@dataclass
class RunRecords:
    """One run's ``history.json``: where it came from, its label, epoch records and step records."""

    path: Path
    label: str
    history: list[dict[str, Any]]
    steps: list[dict[str, Any]] = field(default_factory=list)

    def series(self, metric: str) -> list[dict[str, Any]]:
        """The records carrying ``metric``: epoch records if any has it, else step records."""
        if any(r.get(metric) is not None for r in self.history):
            return self.history
        if any(r.get(metric) is not None for r in self.steps):
            return self.steps
        return []

    def metrics(self) -> set[str]:
        return {k for r in [*self.history, *self.steps] for k, v in r.items() if isinstance(v, (int, float))} - {
            "epoch", "step", "segment"}


def read_run(path: str | Path) -> RunRecords:
    """A run directory (or its ``history.json``) → :class:`RunRecords`."""
    path = Path(path)
    file = path / HISTORY if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{path} holds no {HISTORY}",
                          hint="pass run directories written by `qcompile compile` or `qcompile finetune`")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON ({exc})", hint="rerun the training that wrote it") from None
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        raise ConfigError(f"{file} has no 'history' list", hint="pass history.json files written by qcompile")
    return RunRecords(file, str(data.get("label") or file.parent.name), data["history"], list(data.get("steps") or []))


def group_runs(runs: Sequence[RunRecords], by: str = "label") -> dict[str, list[RunRecords]]:
    """Runs grouped by ``label`` (seeds of a configuration), ``parent`` (the run dir's parent folder,
    e.g. ``runs/ste-lr1e-2/seed0``) or ``run`` (each run alone, named by its directory); in first-seen order."""
    if by not in GROUP_BY:
        raise ConfigError(f"unknown grouping {by!r}", hint=f"choose one of {', '.join(GROUP_BY)}")
    groups: dict[str, list[RunRecords]] = {}
    for run in runs:
        key = {"label": run.label, "parent": run.path.parent.parent.name, "run": str(run.path.parent)}[by]
        groups.setdefault(key, []).append(run)
    return groups


def series_of(groups: Mapping[str, Sequence[RunRecords]], metric: str) -> dict[str, list[list[dict[str, Any]]]]:
    """Grouped runs → grouped series of ``metric`` (what :func:`summarise` and :func:`plot_curves` take).
    A metric no run recorded is an error listing the ones they did."""
    out = {label: [run.series(metric) for run in runs] for label, runs in groups.items()}
    if not any(s for series in out.values() for s in series):
        known = sorted(set().union(*(run.metrics() for runs in groups.values() for run in runs)))
        raise ConfigError(f"no run recorded {metric!r}", hint=f"choose --metric from: {', '.join(known) or '(none)'}")
    return out


def lower_is_better(metric: str) -> bool:
    """Losses, times and memory are best when smallest; everything else (accuracy, gain) when largest."""
    return "loss" in metric or metric in ("seconds", "peak_mem_mb")


def points(series: Series, metric: str) -> list[tuple[float, float]]:
    """``(x, value)`` of every record with a finite ``metric``, in x order. x is the step of step records,
    and for epoch records the 1-based position in the run: a run finetuned again restarts its loop's
    ``epoch`` at 0, but its history continues."""
    out = []
    for position, record in enumerate(series, start=1):
        value = record.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append((float(record["step"] if "step" in record else position), float(value)))
    return sorted(out)


def mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and sample standard deviation (n − 1; 0 for one value; None for none)."""
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var)}


def summarise(groups: Mapping[str, Sequence[Series]], metric: str = "test_acc", last_k: int = 3) -> list[dict[str, Any]]:
    """Per label: ``runs``; ``final`` (mean ± std over runs of each run's last value); ``last_k`` (mean ±
    std of the last ``last_k`` values of every run, pooled: seed spread and epoch-to-epoch wobble
    together); ``best`` (mean ± std over runs of each run's best value, and the best single value)."""
    if last_k < 1:
        raise ConfigError(f"last_k must be >= 1, got {last_k}", hint="e.g. --last-k 3")
    pick = min if lower_is_better(metric) else max
    rows = []
    for label, runs in groups.items():
        curves = [[v for _, v in points(s, metric)] for s in runs]
        curves = [c for c in curves if c]
        bests = [pick(c) for c in curves]
        rows.append({
            "label": label, "metric": metric, "runs": len(curves), "points": max(map(len, curves), default=0),
            "final": mean_std([c[-1] for c in curves]),
            "last_k": {"k": last_k, **mean_std([v for c in curves for v in c[-last_k:]])},
            "best": {**mean_std(bests), "overall": pick(bests) if bests else None},
        })
    return rows


def band(runs: Sequence[Series], metric: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """``(x, mean, min, max)`` over runs at every x any run reached (a shorter run drops out of its tail)."""
    at: dict[float, list[float]] = {}
    for series in runs:
        for x, v in points(series, metric):
            at.setdefault(x, []).append(v)
    xs = sorted(at)
    return xs, [sum(at[x]) / len(at[x]) for x in xs], [min(at[x]) for x in xs], [max(at[x]) for x in xs]


def plot_curves(groups: Mapping[str, Sequence[Series]], path: str | Path, metric: str = "test_acc",
                title: str | None = None) -> Path:
    """One PNG: per label the mean curve over its runs and the min–max band (accuracies in %).
    Written to a temporary file and renamed, so a reader never sees half a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; harmless when already selected
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from qcompile.atomic import atomic_write

    scale = 100.0 if metric.endswith("acc") else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        step_axis = False
        for label, runs in groups.items():
            xs, mean, lo, hi = band(runs, metric)
            if not xs:
                continue
            step_axis = step_axis or any("step" in r for s in runs for r in s)
            n = sum(1 for s in runs if points(s, metric))
            (line,) = ax.plot(xs, [scale * v for v in mean], label=f"{label} (n={n})", linewidth=1.5)
            if n > 1:
                ax.fill_between(xs, [scale * v for v in lo], [scale * v for v in hi], color=line.get_color(),
                                alpha=0.2, linewidth=0)
        ax.set_xlabel("step" if step_axis else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{metric} (%)" if scale != 1.0 else metric)
        ax.set_title(title or f"{metric}: mean over runs, min–max shaded")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = Path(path)
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)
    return path


def merge_steps(previous: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                resume: bool) -> list[dict[str, Any]]:
    """A run's step records after one more training call (``compile`` or ``finetune``).

    Each call that trains is a *segment* (``segment`` 0, 1, ...) and steps are numbered across
    segments. A resumed call's records start with those its checkpoint restored: when the last
    segment on record is exactly that prefix, the call continues it and replaces it (no step is
    kept twice); otherwise (e.g. the interrupted call crashed before recording) it is a new segment.
    """
    segments: dict[int, list[dict[str, Any]]] = {}
    for record in previous:
        segments.setdefault(int(record.get("segment", 0)), []).append(dict(record))
    offsets, total = {}, 0
    for index in sorted(segments):
        offsets[index] = total
        total = max([total, *(r["step"] for r in segments[index])])
    last = max(segments, default=None)
    if resume and last is not None:
        local = [{**r, "step": r["step"] - offsets[last]} for r in segments[last]]
        if [{k: v for k, v in r.items() if k != "segment"} for r in local] == [dict(r) for r in new[:len(local)]]:
            total = offsets.pop(last)
            del segments[last]
    index = max(segments, default=-1) + 1
    merged = [r for i in sorted(segments) for r in segments[i]]
    return merged + [{**r, "segment": index, "step": total + r["step"]} for r in new]


def summarise_steps(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per step metric (e.g. meta_loss, meta_gain): first, last, mean, min, max and count —
    how it moved over training, small enough for a ``--json`` summary."""
    out: dict[str, dict[str, float]] = {}
    names = list(dict.fromkeys(k for r in records for k in r if k not in ("step", "epoch", "segment")))
    for name in names:
        values = [float(r[name]) for r in records if isinstance(r.get(name), (int, float))]
        if values:
            out[name] = {"first": values[0], "last": values[-1], "mean": sum(values) / len(values),
                         "min": min(values), "max": max(values), "count": len(values)}
    return out
