"""What ``bench`` reports: latency of an exported model on this machine, and its size.

Latency is timed with random inputs of the model's shape; median and p90 rather than mean, because
the first runs and the occasional scheduler hiccup would otherwise dominate a number that is meant
to compare artifacts and providers. Size is the file's; the stored tensor bytes and the information
bound need the ``onnx`` package to read the file's tensors, so they are reported only where it is
installed, and the report says so otherwise. Both command lines call :func:`benchmark`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from qcompile.runtime.errors import InputError
from qcompile.runtime.memory import session_memory
from qcompile.runtime.optional import available, install_hint
from qcompile.runtime.session import Session, format_shape


def benchmark(model: str | Path, reference: str | Path | None = None, batch_sizes: Sequence[int] = (1, 64),
              repeats: int = 50, warmup: int = 10, providers: str | Sequence[str] = "auto",
              spinning: bool | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Size and latency of ``model`` (and of ``reference``, usually the fp32 export, with ratios); a plain dict.

    ``{"model": {"path", "size", "latency", "memory", "providers", "spinning"}, "batch_sizes", "repeats"}``, plus
    ``reference`` and ``ratios`` (``file_size``, ``session_rss``, ``latency`` per batch size: model / reference)
    when a reference is given. ``size`` is :func:`size_summary`; ``latency`` is :func:`measure_latency`;
    ``memory`` is :func:`~qcompile.runtime.memory.session_memory` (RSS growth while the session is built).
    ``log`` hears a line before each file is timed.
    """

    def measure(path: str | Path) -> dict[str, Any]:
        if log is not None:
            log(f"timing {path} at batch sizes {', '.join(map(str, batch_sizes))}")
        session = Session(path, providers=providers, spinning=spinning)
        latency = measure_latency(session, batch_sizes, warmup=warmup, repeats=repeats)
        memory = session_memory(path, session.providers, session.spinning)
        return {"path": Path(path), "size": size_summary(path), "latency": latency, "memory": memory,
                "providers": session.providers, "spinning": session.spinning}

    report: dict[str, Any] = {"model": measure(model), "batch_sizes": list(batch_sizes), "repeats": repeats}
    if reference is not None:
        ref = report["reference"] = measure(reference)
        m = report["model"]
        growth = (m["memory"]["rss_growth_bytes"], ref["memory"]["rss_growth_bytes"])
        report["ratios"] = {
            "file_size": m["size"]["file_bytes"] / ref["size"]["file_bytes"],
            "session_rss": growth[0] / growth[1] if None not in growth and growth[1] > 0 else None,
            "latency": {b: m["latency"][b]["median_ms"] / ref["latency"][b]["median_ms"] for b in batch_sizes},
        }
    return report


def size_summary(path: str | Path) -> dict[str, Any]:
    """File bytes; with ``onnx`` installed also stored tensor bytes, the information bound and file / bound.

    Without ``onnx`` those are ``None`` and ``bound_note`` says why and what to install (it is ``None``
    when the bound was computed). See :func:`qcompile.runtime.size.size_report` for the bound.
    """
    if not available("onnx"):
        return {"file_bytes": Path(path).stat().st_size, "weight_bytes": None, "bound_bytes": None,
                "quantized_bound_bytes": None, "file_over_bound": None, "by_dtype": None,
                "bound_note": "information bound not computed: reading the file's tensors needs the onnx package; "
                              + install_hint("onnx")}
    from qcompile.runtime.size import size_report

    r = size_report(path)
    return {"file_bytes": r["file_bytes"], "weight_bytes": sum(t["stored_bytes"] for t in r["tensors"]),
            "bound_bytes": r["bound_bytes"], "quantized_bound_bytes": r["quantized_bound_bytes"],
            "file_over_bound": r["ratio"], "by_dtype": r["by_dtype"], "bound_note": None}


def measure_latency(
    session_or_path: Session | str | Path,
    batch_sizes: Sequence[int] = (1, 64),
    warmup: int = 10,
    repeats: int = 50,
) -> dict[int, dict[str, float]]:
    """``{batch_size: {"median_ms", "p90_ms", "min_ms", "samples_per_s"}}`` for each batch size.

    Times ``Session.run`` (input checks included, they are negligible) on one fixed random float
    input per batch size, after ``warmup`` untimed runs.
    """
    session = session_or_path if isinstance(session_or_path, Session) else Session(session_or_path)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    rng = np.random.default_rng(0)
    results = {}
    for batch in batch_sizes:
        x = rng.random(_input_shape(session, batch), dtype=np.float32).astype(session.artifact.input_dtype)
        for _ in range(warmup):
            session.run(x)
        times = np.empty(repeats)
        for i in range(repeats):
            start = time.perf_counter_ns()
            session.run(x)
            times[i] = (time.perf_counter_ns() - start) / 1e6
        median = float(np.median(times))
        results[int(batch)] = {
            "median_ms": median,
            "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(times.min()),
            "samples_per_s": batch * 1000.0 / median if median > 0 else float("inf"),
        }
    return results


def _input_shape(session: Session, batch: int) -> tuple[int, ...]:
    shape = session.artifact.input_shape
    if shape[0] is not None and shape[0] != batch:
        raise InputError(
            f"cannot time batch size {batch}: the model has a fixed batch of {shape[0]}",
            hint=f"use batch_sizes=({shape[0]},)",
        )
    if any(d is None for d in shape[1:]):
        raise InputError(
            f"cannot make a random input: the model input {format_shape(shape)} has dynamic dims besides batch",
            hint="export with a fixed input size (qcompile writes it to the 'qcompile.input' metadata)",
        )
    return (batch, *shape[1:])
