"""MetaQuant (Chen, Wang & Pan, NeurIPS 2019): a meta-network learns the gradient through the
quantizer. Research notes and the reference code's pitfalls: ``shared/methods/metaquant.md``.

The plug-in has three parts, each in its own module:

- :mod:`.meta_quantizer` — every selected Conv/Linear's DoReFa/BWN quantizer is wrapped so the
  training step can substitute the meta weight for W (no change to the user's model); export
  unwraps it, leaving plain packed codes;
- :mod:`.meta_nets` — the shared coordinate-wise M_φ (FC-Grad, MultiFC, LSTMFC), run in chunks
  by :mod:`.chunking` so its activations stay bounded;
- :mod:`.step` — the training iteration (with :mod:`.refine`, an SGD/Adam whose direction can be
  computed without being applied), the paper's Eq. 6 forward or the reference code's.

Options (``QuantSpec.method_options``) are :class:`MetaQuantOptions`.
"""

from __future__ import annotations

from qcompile.errors import ConfigError
from qcompile.methods.base import Method
from qcompile.methods.metaquant.meta_nets import FCGrad, LSTMFC, MetaNet, MultiFC, build_meta_net
from qcompile.methods.metaquant.meta_quantizer import SUPPORTED, MetaContext, MetaQuantizer
from qcompile.methods.metaquant.options import MetaQuantOptions
from qcompile.methods.metaquant.refine import RefinedOptimizer
from qcompile.methods.metaquant.step import MetaQuantStep, meta_layers
from qcompile.methods.registry import register_method
from qcompile.plan import SitePlan
from qcompile.quantizers import WeightQuantizer


@register_method
class MetaQuant(Method):
    name = "metaquant"
    summary = "meta-learned gradient through the quantizer (FC-Grad / MultiFC / LSTMFC)"
    paper = "Chen, Wang & Pan, MetaQuant, NeurIPS 2019"

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.settings = MetaQuantOptions.from_dict(self.options)

    def weight_quantizer(self, site: SitePlan) -> WeightQuantizer:
        """Wrap DoReFa/BWN. A site that differs from the spec by policy or override (e.g. a first
        layer kept at 8-bit uniform) keeps its plain quantizer and trains by its STE gradient
        with the same optimizer rule; an unsupported quantizer chosen for the model is an error."""
        inner = super().weight_quantizer(site)
        if isinstance(inner, SUPPORTED):
            return MetaQuantizer(inner)
        if site.reason:
            return inner
        raise ConfigError(f"MetaQuant needs a dorefa or bwn weight quantizer, got {site.quantizer!r}",
                          hint="use --quantizer dorefa (k bits) or --quantizer bwn (1 bit) with --method metaquant")

    def step_strategy(self) -> MetaQuantStep:
        return MetaQuantStep(self.settings)


__all__ = [
    "FCGrad", "LSTMFC", "MetaContext", "MetaNet", "MetaQuant", "MetaQuantOptions", "MetaQuantStep",
    "MetaQuantizer", "MultiFC", "RefinedOptimizer", "build_meta_net", "meta_layers",
]
