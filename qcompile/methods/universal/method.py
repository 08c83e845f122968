"""The ``universal`` plug-in: which hooks of :class:`~qcompile.methods.base.Method` it overrides and with what.

- ``weight_quantizer``: a :class:`~.quantizers.UniversalWeightQuantizer` on the uniform grid, node id
  ``'<qualified layer name>:weight'`` (the dither's key); sites kept at another quantizer by policy or
  override keep their plain quantizer;
- ``activation_quantizer``: a :class:`~.quantizers.UniversalActivationQuantizer` (noise in training,
  rounding at deployment);
- ``step_strategy``: the α schedule (SR only; UN and UQ train with the standard step).
"""

from __future__ import annotations

from qcompile.errors import ConfigError
from qcompile.methods.base import Method
from qcompile.methods.registry import register_method
from qcompile.methods.universal.dither import node_id
from qcompile.methods.universal.options import CLI_OPTIONS, UniversalOptions
from qcompile.methods.universal.quantizers import UniversalActivationQuantizer, UniversalWeightQuantizer
from qcompile.methods.universal.schedule import AlphaScheduleStep
from qcompile.plan import QuantSpec, SitePlan
from qcompile.quantizers import ActivationQuantizer, WeightQuantizer


@register_method
class Universal(Method):
    name = "universal"
    summary = "universal quantization: noise / subtractive dither / soft rounding, seeded-dither export"
    paper = "Agustsson & Theis, Universally Quantized Neural Compression, NeurIPS 2020"
    cli_options = CLI_OPTIONS
    settings_type = UniversalOptions

    def weight_quantizer(self, site: SitePlan) -> WeightQuantizer:
        if site.quantizer != "uniform":
            if site.reason:
                return super().weight_quantizer(site)
            raise ConfigError(f"universal quantization needs the symmetric uniform grid, got --quantizer {site.quantizer}",
                              hint="use --quantizer uniform (the default) with --method universal")
        return UniversalWeightQuantizer(site.w_bits, site.per_channel, node_id(site.name, "weight"), self.settings)

    def activation_quantizer(self, site: SitePlan, signed: bool) -> ActivationQuantizer:
        return UniversalActivationQuantizer(site.a_bits, signed, self.settings)

    def step_strategy(self) -> AlphaScheduleStep | None:
        return AlphaScheduleStep(self.settings) if self.settings.mode == "sr" else None

    def label(self, spec: QuantSpec) -> str:
        """'universal/sr W2A4': the mode tells the arms of a comparison apart."""
        return f"{self.name}/{self.settings.mode} {spec.label()}"
