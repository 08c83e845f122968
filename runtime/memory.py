"""Resident memory of an onnxruntime session: how much the process's RSS grows while the session is built.

Measured in a fresh child process (``python -m qcompile.runtime.memory MODEL``), after onnxruntime and
numpy are imported, so neither the imports nor memory that an earlier session freed (and the allocator
kept) blur the figure. RSS is read from Linux's ``/proc/self/statm`` (psutil is not a dependency);
elsewhere the growth is ``None`` and ``note`` says why. The growth includes the model file's bytes while
ORT parses them, its initializers in their run-time form (a float32 copy of any weight the graph
optimiser folds, packed bytes of a MatMulNBits weight) and kernels' pre-packed weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

STATM = Path("/proc/self/statm")
NO_PROC = "resident memory not measured: it is read from /proc/self/statm, which this system lacks (Linux only)"


def resident_bytes() -> int | None:
    """This process's resident set size in bytes, or ``None`` without ``/proc``."""
    try:
        return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def session_memory(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                   spinning: bool | None = None) -> dict[str, Any]:
    """``{"rss_before_bytes", "rss_after_bytes", "rss_growth_bytes", "note"}`` of building ``path``'s session
    in a child process; all ``None`` (and ``note`` saying why) where RSS cannot be read or the child fails."""
    empty = {"rss_before_bytes": None, "rss_after_bytes": None, "rss_growth_bytes": None}
    if resident_bytes() is None:
        return {**empty, "note": NO_PROC}
    command = [sys.executable, "-m", "qcompile.runtime.memory", str(path), "--providers", ",".join(providers)]
    if spinning is not None:
        command.append("--spin" if spinning else "--no-spin")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return {**empty, "note": f"resident memory not measured: the child process failed ({reason})"}
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rss_before_bytes": before, "rss_after_bytes": after, "rss_growth_bytes": after - before, "note": None}


def _measure(path: str, providers: list[str], spinning: bool | None) -> tuple[int | None, int | None]:
    from qcompile.runtime.engine import Engine
    from qcompile.runtime.session import Session

    Engine.create(providers, None, spinning)  # imports and checks everything the session needs, first
    before = resident_bytes()
    session = Session(path, providers=providers, spinning=spinning)
    after = resident_bytes()
    del session
    return before, after


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
