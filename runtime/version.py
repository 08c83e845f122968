"""The version of qcompile and of its runtime, kept in one place.

Both distributions built from this repository (``qcompile`` and ``qcompile-runtime``) read it at build
time, and the compiler requires the runtime of exactly this version, so artifacts, the CLI and the
runtime always agree.
"""

__version__ = "0.3.0"
