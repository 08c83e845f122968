"""Resident memory of an onnxruntime session: how much the process's RSS grows while the session is built.

Measured in a fresh child process (``python -m qcompile.runtime.memory MODEL``), so memory that an earlier
session freed (and the allocator kept) cannot hide a later one's. The child first opens a one-node warm-up
model through the same :class:`~qcompile.runtime.session.Session` path: onnxruntime's one-time set-up of the
process (its environment, kernel registry, thread pool) and the runtime's own imports are paid there and
reported apart (``process_setup_bytes``), not charged to the model. Freed heap is handed back to the OS
(glibc's ``malloc_trim``, where present) before each reading, so what remains is what the session holds: its
initializers in their run-time form (a float32 copy of any weight the graph optimiser folds, the packed
bytes of a MatMulNBits weight), kernels' pre-packed weights and the graph. RSS is read from Linux's
``/proc/self/statm`` (psutil is not a dependency); elsewhere the growth is ``None`` and ``note`` says why.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

STATM = Path("/proc/self/statm")
NO_PROC = "resident memory not measured: it is read from /proc/self/statm, which this system lacks (Linux only)"
# ONNX (IR 10, opset 21) of y = Identity(x), x float [N, 1]: made with onnx.helper, 76 bytes (the runtime has no onnx)
WARMUP_MODEL = (b'\x08\n\x12\x00:@\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x06warmupZ\x11\n\x01x\x12\x0c'
                b'\n\n\x08\x01\x12\x06\n\x00\n\x02\x08\x01b\x11\n\x01y\x12\x0c\n\n\x08\x01\x12\x06\n\x00'
                b'\n\x02\x08\x01B\x04\n\x00\x10\x15')


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc's ``malloc_trim``); nothing elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        getattr(ctypes.CDLL(name), "malloc_trim")(0)
    except (OSError, AttributeError, TypeError):
        pass


def resident_bytes() -> int | None:
    """This process's resident set size in bytes, or ``None`` without ``/proc``."""
    try:
        return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def session_memory(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                   spinning: bool | None = None) -> dict[str, Any]:
    """``{"rss_before_bytes", "rss_after_bytes", "rss_growth_bytes", "process_setup_bytes", "note"}`` of building
    ``path``'s session in a child process; all ``None`` (and ``note`` saying why) where RSS cannot be read or the
    child fails."""
    empty = {"rss_before_bytes": None, "rss_after_bytes": None, "rss_growth_bytes": None, "process_setup_bytes": None}
    if resident_bytes() is None:
        return {**empty, "note": NO_PROC}
    command = [sys.executable, "-m", "qcompile.runtime.memory", str(path), "--providers", ",".join(providers)]
    if spinning is not None:
        command.append("--spin" if spinning else "--no-spin")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return {**empty, "note": f"resident memory not measured: the child process failed ({reason})"}
    start, before, after = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rss_before_bytes": before, "rss_after_bytes": after, "rss_growth_bytes": after - before,
            "process_setup_bytes": before - start, "note": None}


def _measure(path: str, providers: list[str], spinning: bool | None) -> list[int | None]:
    from qcompile.runtime.session import Session

    _trim_heap()
    start = resident_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        warmup = Path(tmp) / "warmup.onnx"
        warmup.write_bytes(WARMUP_MODEL)
        sessions = [Session(warmup, providers=providers, spinning=spinning)]  # kept: its memory is not reused
    readings = [start]
    for model in (None, path):
        if model is not None:
            sessions.append(Session(model, providers=providers, spinning=spinning))
        _trim_heap()
        readings.append(resident_bytes())
    return readings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qcompile.runtime.memory", description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--providers", default="CPUExecutionProvider")
    parser.add_argument("--spin", dest="spinning", action="store_true", default=None)
    parser.add_argument("--no-spin", dest="spinning", action="store_false")
    args = parser.parse_args(argv)
    print(json.dumps(list(_measure(args.model, args.providers.split(","), args.spinning))))


if __name__ == "__main__":
    main()
