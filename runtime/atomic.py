"""Atomic file writes: a temporary file in the target folder, fsync, then ``os.replace``.

Readers — and a crash half-way — see either the old file or the new one, never half a file. Every
artifact qcompile writes (ONNX files, checkpoints, run directories, plots, codec files) goes through here.

Permissions are those of an ordinary write, not of a private temporary file:

1. a new file gets ``0o666 & ~umask`` (what ``open(path, "w")`` gives): the temporary file is
   created with mode 0o666 and the kernel applies the umask, so no process-wide umask is read or
   changed (``os.umask`` would, for a moment, in every thread);
2. replacing an existing file keeps that file's mode, as ``cp`` onto it and editors do: a re-export
   does not change who may read an artifact someone has already shared (or kept private).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

NEW_FILE_MODE = 0o666  # before the umask, as for open(path, "w")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> int:
    """Call ``write(file_object)`` on a temporary file, then move it onto ``path``; return the size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        existing = _mode_of(path)
        if existing is not None:
            os.chmod(tmp, existing)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def atomic_write_text(path: str | os.PathLike, text: str) -> int:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside ``path``, opened for writing with mode ``NEW_FILE_MODE & ~umask``."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), NEW_FILE_MODE), tmp
        except FileExistsError:
            continue


def _mode_of(path: Path) -> int | None:
    """The permission bits of the regular file at ``path``, or None when there is none to keep."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
