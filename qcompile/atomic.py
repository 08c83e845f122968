"""Atomic file writes: a temporary file in the target folder, fsync, then ``os.replace``.

Readers — and a crash half-way — see either the old file or the new one, never half a file. Every
artifact qcompile writes (ONNX files, checkpoints, run directories, plots) goes through here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> int:
    """Call ``write(file_object)`` on a temporary file, then move it onto ``path``; return the size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def atomic_write_text(path: str | os.PathLike, text: str) -> int:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
