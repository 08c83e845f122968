"""The DynaDFQ plug-in: which hooks it overrides and with what.

- ``plan_spec``: ``--bits B`` is the width of every quantized layer's weights and input activations
  (W_bA_b, the configuration DynaDFQ's tables report); ``--a-bits none`` keeps activations float, and a
  static ``--bits B`` takes another ``--a-bits`` (W2A4: 2-bit weights, 4-bit inputs); with
  several candidates (``--bits 2,3,4``) the plan is at the widest, which calibration uses;
- ``weight_quantizer``: the nested mid-rise per-channel quantizer (:mod:`.nested`) over the candidate
  widths, in use at B; a layer whose bits a policy or override chose (e.g. ``--first-layer 8bit``) keeps
  the core's quantizer;
- ``activation_quantizer``: per-tensor at B from one calibrated, then frozen range (:mod:`.activation`);
- ``extra_passes``: with several candidates, the bit selector on the input (:mod:`.insert_selector`);
- ``data_source``: the synthetic pool, from ``--data-free POOL`` or ``--data pool:POOL`` (with the
  selector: its soft labels as targets);
- ``keeps_batchnorm_statistics`` and ``step_strategy``: on a pool, the float model's BatchNorm statistics
  are kept (no re-estimation) and frozen during training (:mod:`.step`); with the selector, the joint step
  of :mod:`.dynamic_step` (mixup of easy images, the BitOPs regulariser toward ``--target-bitops``).

Distillation from the float model is ``--kd-alpha``. With the selector, ``export_artifact`` writes the
``dynamic`` bundle (selector graph + one multi-width graph taking the widths as an input, :mod:`.export`),
which the runtime dispatches per image; ``export_passes`` make ``deployable()`` the static fallback.
"""

from __future__ import annotations

from dataclasses import replace

from qcompile.errors import ConfigError
from qcompile.methods.base import Method
from qcompile.methods.dynadfq.activation import MultiBitActivationQuantizer
from qcompile.methods.dynadfq.dynamic_step import DynamicStep
from qcompile.methods.dynadfq.insert_selector import FixWidths, InsertBitSelector
from qcompile.methods.dynadfq.nested import NestedWeightQuantizer
from qcompile.methods.dynadfq.options import CLI_OPTIONS, DynaDFQOptions
from qcompile.methods.dynadfq.pool_data import PREFIX, is_pool, pool_splits
from qcompile.methods.dynadfq.step import FrozenBatchNormStep
from qcompile.methods.registry import register_method
from qcompile.plan import QuantSpec

API_DEFAULT_BITS = (4, 8)  # compile()'s w_bits and a_bits when not given


@register_method
class DynaDFQ(Method):
    name = "dynadfq"
    summary = "data-free quantization on a synthetic pool, static widths or a per-image bit selector"
    paper = "Hong, Baik, Oh & Lee, Diversity, Plausibility, and Difficulty: Dynamic Data-Free Quantization, WACV 2025"
    cli_options = CLI_OPTIONS
    settings_type = DynaDFQOptions

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self._on_pool = False  # set when data_source serves a pool

    def plan_spec(self, spec: QuantSpec) -> QuantSpec:
        b = self.settings.width
        own_a_bits = not self.settings.dynamic and spec.a_bits not in (API_DEFAULT_BITS[1], b, None)
        if spec.w_bits not in (API_DEFAULT_BITS[0], b) or (self.settings.dynamic and spec.a_bits not in
                                                           (API_DEFAULT_BITS[1], b, None)):
            raise ConfigError(f"--method dynadfq sets both widths with --bits {b}, but --w-bits {spec.w_bits} / "
                              f"--a-bits {spec.a_bits} ask for others",
                              hint=f"drop --w-bits/--a-bits (or give --bits as the width you want); --a-bits none "
                                   "keeps activations float; a static --bits B takes another --a-bits (e.g. W2A4)")
        if spec.quantizer != "uniform":
            raise ConfigError(f"--method dynadfq uses its own nested weight quantizer, not --quantizer {spec.quantizer}",
                              hint="drop --quantizer")
        return replace(spec, w_bits=b, a_bits=spec.a_bits if own_a_bits or spec.a_bits is None else b)

    def weight_quantizer(self, site):
        if site.reason or site.w_bits != self.settings.width:
            return super().weight_quantizer(site)
        return NestedWeightQuantizer(self.settings.bits, bits=self.settings.width, per_channel=site.per_channel)

    def activation_quantizer(self, site, signed: bool):
        if not self.settings.dynamic and site.a_bits is not None and not site.reason:  # e.g. W2A4's A4
            return MultiBitActivationQuantizer((site.a_bits,), signed=signed, bits=site.a_bits)
        if site.a_bits != self.settings.width:
            return super().activation_quantizer(site, signed)
        return MultiBitActivationQuantizer(self.settings.bits, signed=signed, bits=self.settings.width)

    def extra_passes(self, plan):
        return [InsertBitSelector(self.settings.bits, hidden=self.settings.selector_hidden)] \
            if self.settings.dynamic else []

    def export_passes(self, plan):
        """With the selector, :meth:`deployable` is the static fallback (:class:`FixWidths`: each layer at
        its most frequent width, BatchNorm folded into the ops it unwrapped); the export itself writes the
        ``dynamic`` bundle (:meth:`export_artifact`)."""
        if not self.settings.dynamic:
            return []
        from qcompile.passes.fold_batchnorm import FoldBatchNorm

        return [FixWidths(), FoldBatchNorm()]

    def export_artifact(self, compiled, path, opset):
        """With the selector: the ``dynamic`` bundle (:mod:`.export`); else the core's export."""
        if not self.settings.dynamic:
            return False
        from qcompile.methods.dynadfq.export import check_selector_exports, export_dynamic

        if path is None:
            check_selector_exports(compiled)
            return True
        return export_dynamic(compiled, path, opset)

    def data_source(self, spec, model, example_inputs):
        if spec is not None and spec.startswith(PREFIX):
            path = spec[len(PREFIX):]
        elif self.settings.pool is None:
            return None
        elif spec is not None:
            raise ConfigError(f"both --data-free {self.settings.pool} and --data {spec} were given",
                              hint="give one: --data-free POOL trains on the synthetic pool, --data on real data")
        else:
            path = self.settings.pool
        self._on_pool = True
        return pool_splits(path, soft=self.settings.dynamic)

    def keeps_batchnorm_statistics(self, data) -> bool:
        return is_pool(data)

    def step_strategy(self):
        """With the selector, the joint step; else frozen BatchNorm statistics when the data is a pool (known
        once data was loaded), else the standard step."""
        if self.settings.dynamic:
            return DynamicStep(self.settings.target_bitops, self.settings.bit_weight, freeze_batchnorm=self._on_pool,
                               selector_lr=self.settings.selector_lr)
        return FrozenBatchNormStep() if self._on_pool else None

    def label(self, spec: QuantSpec) -> str:
        if self.settings.dynamic:
            return f"{self.name} W{{{','.join(map(str, self.settings.bits))}}} T{self.settings.target_bitops:g}"
        return f"{self.name} W{spec.w_bits}" + (f"A{spec.a_bits}" if spec.a_bits else "")
