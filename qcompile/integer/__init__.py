"""The ``ort-int8`` target: a model whose eval arithmetic is onnxruntime's integer kernels'.

:mod:`.arith` holds the kernels' arithmetic (requantisation, QLinearAdd, QLinearGlobalAveragePool);
:mod:`.kernel` the quantized Conv/Linear; :mod:`.modules` the quantized residual addition and global
pool; ``passes.integer_kernels`` wires them into a graph. The export side is :mod:`qcompile.export.qdq`.

Targets: ``exact`` computes in the integer domain in float (``op(x_ints, w_ints)·scale + b``), bit-exact
in any runtime; ``ort-int8`` runs on onnxruntime's 8-bit integer kernels (QLinearConv, QGemm, ...).
"""

from __future__ import annotations

from qcompile.runtime.widen import EXACT, ORT_INT8, TARGET_FIELD

TARGETS = (EXACT, ORT_INT8)


def export_target(gm) -> str:
    """The target a quantized graph was compiled for: ``ort-int8`` once ``IntegerKernels`` ran on it."""
    return ORT_INT8 if any(getattr(m, "integer_kernel", False) for m in gm.modules()) else EXACT
