"""Latency of an exported model on this machine, with random inputs of the model's shape.

Median and p90 rather than mean: the first runs and the occasional scheduler hiccup would
otherwise dominate a number that is meant to compare artifacts and providers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from qcompile.runtime.errors import InputError
from qcompile.runtime.session import Session, format_shape


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
