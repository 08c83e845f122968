"""The exporter's import path for the size report, which lives in the runtime (:mod:`qcompile.runtime.size`).

``qcompile-runtime bench`` reports the same numbers on a deployment machine, so there is one
implementation, on the side that needs no torch.
"""

from qcompile.runtime.size import BITS_KEY, ELEMENTS_KEY, size_report

__all__ = ["BITS_KEY", "ELEMENTS_KEY", "size_report"]
