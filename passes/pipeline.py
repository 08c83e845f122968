"""Pipelines: the ordered pass lists qcompile runs, readable in one place.

    quantize:  InsertWeightQuantizers → InsertActivationQuantizers → AttachBatchNorm
               (→ ExactGlobalPooling when activations are quantized, → IntegerKernels on the ort-int8
               target) → the method's extra passes
    export:    StripForExport → FoldBatchNorm → the method's export passes   (then the ONNX back end)

The quantizers come from factories (the method's ``weight_quantizer``/``activation_quantizer``).

Run with torch.fx's ``PassManager``; each pass's report lands in ``gm.meta``.
"""

from __future__ import annotations

from torch import fx
from torch.fx.passes.infra.pass_manager import PassManager

from qcompile.errors import ActionableError
from qcompile.plan import QuantPlan
from qcompile.passes.attach_batchnorm import AttachBatchNorm
from qcompile.passes.base import GraphPass, reports
from qcompile.passes.exact_pooling import ExactGlobalPooling
from qcompile.passes.fold_batchnorm import FoldBatchNorm
from qcompile.passes.integer_kernels import IntegerKernels
from qcompile.passes.insert_activation_quantizers import (ActivationQuantizerFactory, InsertActivationQuantizers,
                                                          default_activation_quantizer)
from qcompile.passes.insert_weight_quantizers import (QuantizerFactory, InsertWeightQuantizers,
                                                      default_weight_quantizer)
from qcompile.passes.strip_for_export import StripForExport


def quantize_passes(plan: QuantPlan, factory: QuantizerFactory = default_weight_quantizer,
                    extra: list[GraphPass] = (),
                    activation_factory: ActivationQuantizerFactory = default_activation_quantizer) -> list[GraphPass]:
    exact = [ExactGlobalPooling()] if any(site.a_bits for site in plan.sites) else []
    if exact and plan.spec.target == "ort-int8":
        exact.append(IntegerKernels())
    return [InsertWeightQuantizers(plan, factory), InsertActivationQuantizers(plan, activation_factory),
            AttachBatchNorm(), *exact, *extra]


def export_passes(extra: list[GraphPass] = ()) -> list[GraphPass]:
    return [StripForExport(), FoldBatchNorm(), *extra]


def run_passes(gm: fx.GraphModule, passes: list[GraphPass]) -> tuple[fx.GraphModule, list[dict]]:
    """Run ``passes`` in order; return the module and the reports they added."""
    before = len(reports(gm))
    try:
        result = PassManager(passes=list(passes))(gm)
    except Exception as exc:  # PassManager wraps failures in a bare Exception: surface actionable ones
        if isinstance(exc.__cause__, ActionableError):
            raise exc.__cause__ from None
        raise
    gm = result.graph_module
    return gm, reports(gm)[before:]
