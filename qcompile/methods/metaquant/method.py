"""The MetaQuant plug-in: which hooks of :class:`~qcompile.methods.base.Method` it overrides and with what."""

from __future__ import annotations

from qcompile.errors import ConfigError
from qcompile.methods.base import Method
from qcompile.methods.metaquant.meta_quantizer import SUPPORTED, MetaQuantizer
from qcompile.methods.metaquant.options import CLI_OPTIONS, MetaQuantOptions
from qcompile.methods.metaquant.step import MetaQuantStep
from qcompile.methods.registry import register_method
from qcompile.plan import QuantSpec, SitePlan
from qcompile.quantizers import WeightQuantizer


@register_method
class MetaQuant(Method):
    name = "metaquant"
    summary = "meta-learned gradient through the quantizer (FC-Grad / MultiFC / LSTMFC)"
    paper = "Chen, Wang & Pan, MetaQuant, NeurIPS 2019"
    cli_options = CLI_OPTIONS
    settings_type = MetaQuantOptions

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

    def label(self, spec: QuantSpec) -> str:
        """'metaquant/multifc dorefa W1' when the meta-network was chosen, so plots tell variants apart."""
        meta = self.options.get("meta")
        return f"{self.name}/{meta} {spec.label()}" if meta else super().label(spec)
