"""The compiler's import path for datasets: the torch-free loaders of :mod:`qcompile.runtime.data`.

One implementation serves both sides: the runtime scores artifacts with these loaders on machines
without torch, and the compiler trains and calibrates on exactly what they return.
"""

from __future__ import annotations

from qcompile.runtime.data import *  # noqa: F401,F403  (the same public names)
from qcompile.runtime.data import __all__  # noqa: F401
