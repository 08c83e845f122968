"""Atomic file writes, defined in the runtime (:mod:`qcompile.runtime.atomic`): the torch-free codec
writes its .qc files and images the same way the compiler writes artifacts. Re-exported here."""

from qcompile.runtime.atomic import NEW_FILE_MODE, atomic_write, atomic_write_text

__all__ = ["NEW_FILE_MODE", "atomic_write", "atomic_write_text"]
