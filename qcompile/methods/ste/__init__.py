"""STE: quantization-aware training with the straight-through estimator (the baseline).

Every quantizer's backward rule is its STE (see :mod:`qcompile.quantizers.ste`); training is the
loop's standard step. Nothing to add: the base :class:`~qcompile.methods.base.Method` is STE.
"""

from qcompile.methods.base import Method
from qcompile.methods.registry import register_method


@register_method
class STE(Method):
    name = "ste"
    summary = "straight-through estimator QAT"
    paper = "Bengio et al. 2013; Courbariaux et al. 2015"
