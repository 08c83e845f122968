"""Score an artifact on a dataset's test split: what ``run`` reports, on numpy and onnxruntime alone.

Both command lines call :func:`score` (``qcompile run`` renders it with rich, ``qcompile-runtime run``
as plain text), so the numbers a deployment machine prints are the compiler's. What the outputs are
measured by is the task's (:mod:`qcompile.runtime.tasks`; classification: top-1 accuracy).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from qcompile.runtime.data import DatasetSplits, load_dataset
from qcompile.runtime.normalisation import Normalization, for_scoring
from qcompile.runtime.kinds import load
from qcompile.runtime.tasks import get_runtime_task


def artifact_task(artifact) -> str:
    """The task an artifact's manifest records; classification for a 0.1.0 or foreign file (they record none)."""
    manifest = artifact.manifest
    return (manifest.task if manifest is not None else None) or "classification"


def score(model: str | Path, data: str | DatasetSplits, batch_size: int = 256,
          providers: str | Sequence[str] = "auto", task: str | None = None,
          spinning: bool | None = None, normalization: Normalization | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``model`` on the test split of ``data`` (a ``--data`` spec or loaded splits); a plain dict.

    ``task`` defaults to the one the artifact records (classification for a file that records none).
    Keys: ``model``, ``data``, ``task`` and the task's figures (classification: ``accuracy``,
    ``correct``), ``samples``, ``seconds`` and ``samples_per_s`` of inference alone, ``providers``,
    ``spinning`` (whether onnxruntime's threads busy-wait; ``None`` asks for the runtime's default),
    ``normalization`` with its ``mean`` and ``std`` (see :func:`~qcompile.runtime.normalisation.for_scoring`:
    ``"artifact"``, the values a qcompile artifact records; ``"given"``, ``normalization`` for an artifact
    that records none; ``"dataset"``, the train split's, for a plain ONNX file — ``log`` hears when that
    happens), ``method`` and ``layers`` from the artifact's metadata; a ``dynamic`` artifact adds its
    dispatch report (``mean_bits``, ``bits_per_layer``, ``mean_bitops``, ``selector_bitops``,
    ``configurations``: see :mod:`qcompile.runtime.dynamic`).
    """
    measures = get_runtime_task(task) if task else None  # a task given is checked before any file is read
    session = load(model, providers=providers, spinning=spinning)  # a classifier, or a dynamic model
    if measures is None:
        task = artifact_task(session.artifact)
        measures = get_runtime_task(task)
    splits = load_dataset(data) if isinstance(data, str) else data
    art = session.artifact
    used, source = for_scoring(art, splits.mean, splits.std, normalization)
    if source == "dataset" and log is not None:
        log(f"{model} is a plain ONNX file that records no normalisation: using the train statistics of {data}")
    x = used.apply(splits.test.x)
    started = time.perf_counter()
    outputs = session.predict(x, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {"model": Path(model), "data": data if isinstance(data, str) else splits.name, "task": task,
            **measures.report(outputs, measures.targets(splits.test.x, splits.test.y)), "samples": len(x),
            "seconds": seconds, "samples_per_s": len(x) / seconds if seconds > 0 else float("inf"),
            "providers": session.providers, "spinning": session.spinning,
            "normalization": source, "mean": list(used.mean), "std": list(used.std), "method": art.method,
            "layers": list(art.layers), **(session.dispatch_report() if hasattr(session, "dispatch_report") else {})}
