"""The package version: one source, :mod:`qcompile.runtime.version` (shared with ``qcompile-runtime``)."""

from qcompile.runtime.version import __version__

__all__ = ["__version__"]
