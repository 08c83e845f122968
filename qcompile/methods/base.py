"""The method plug-in interface.

A method (STE, a meta-learned gradient, universal quantization, DynaDFQ, ...) touches the core only through
the hooks of :class:`Method`; each default is plain STE QAT, so a plug-in overrides only what it
changes:

======================  ==================================================  =============================
hook                    decides                                             consulted by
======================  ==================================================  =============================
``cli_options``         its own command-line options (plain data)           ``compile``/``inspect`` CLI
``plan_spec``           the spec's widths, where its own options set them   ``qcompile.compile``
``weight_quantizer``    the weight quantizer of each planned site           InsertWeightQuantizers
``activation_quantizer``  the input quantizer of each site                  InsertActivationQuantizers
``extra_passes``        fx passes after quantizer insertion                 ``qcompile.compile``
``data_source``         data it provides (synthesised, or a named source)   ``CompiledModel.load_data``
``step_strategy``       the training step                                   ``CompiledModel.finetune``
``keeps_batchnorm_statistics``  data on which BN statistics are not re-estimated  ``calibrate``/``finetune``
``export_passes``       fx passes on the deployable graph, before ONNX      ``CompiledModel.deployable``
``onnx_passes``         ``onnx_ir`` passes inside the ONNX export pipeline   ``CompiledModel.export``
``export_artifact``     an artifact of its own kind (e.g. a bundle)         ``CompiledModel.export``
``label``               how plots and tables name a run                     run directories, ``report``
``task``                what the model is trained for (objective, metrics)  ``qcompile.compile``
======================  ==================================================  =============================

Importing this module does not import torch: the CLI reads every method's ``cli_options`` for
``--help``. Methods register by name (:mod:`qcompile.methods.registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from qcompile.methods.cli_options import CliOptions

if TYPE_CHECKING:
    from pathlib import Path

    import onnx_ir as ir
    import torch
    from torch import nn

    from qcompile.data import DatasetSplits
    from qcompile.passes.base import GraphPass
    from qcompile.plan import QuantPlan, QuantSpec, SitePlan
    from qcompile.quantizers import ActivationQuantizer, WeightQuantizer
    from qcompile.tasks import Task
    from qcompile.train.strategy import StepStrategy


class Method:
    """Default behaviour is plain STE QAT; plug-ins override what they change.

    ``options`` are the API's ``method_options`` (from the command line: ``cli_options``).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    cli_options: ClassVar[CliOptions] = CliOptions()
    settings_type: ClassVar[Any] = None  # a class with ``from_dict(options)``: validated into ``self.settings``

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        self.settings = self.settings_type.from_dict(self.options) if self.settings_type is not None else None

    # ----------------------------------------------------------------- quantize
    def plan_spec(self, spec: QuantSpec) -> QuantSpec:
        """The spec the plan is built from: ``spec`` itself, or with the fields the method's own options
        decide (e.g. one ``--bits`` for weights and activations), so the plan, ``inspect``, labels and the
        run directory state what is really quantized. Must be idempotent (a saved run is planned again)."""
        return spec

    def weight_quantizer(self, site: SitePlan) -> WeightQuantizer:
        from qcompile.quantizers import make_weight_quantizer

        return make_weight_quantizer(site.quantizer, site.w_bits, site.per_channel, site.group_size)

    def activation_quantizer(self, site: SitePlan, signed: bool) -> ActivationQuantizer:
        """The input quantizer of a site that plans ``a_bits``. A replacement subclasses
        :class:`~qcompile.quantizers.ActivationQuantizer`: calibration, freezing and export use its interface."""
        from qcompile.quantizers import ActivationQuantizer

        return ActivationQuantizer(site.a_bits, signed=signed)

    def extra_passes(self, plan: QuantPlan) -> list[GraphPass]:
        return []

    # ----------------------------------------------------------------- data + training
    def data_source(self, spec: str | None, model: nn.Module,
                    example_inputs: tuple[torch.Tensor, ...]) -> DatasetSplits | None:
        """Data this method provides: for ``spec`` (a source it names, e.g. 'pool:FILE'), or when the user
        gave none (``spec`` None), e.g. images synthesised from the float ``model``. None: qcompile's
        loaders read ``spec`` (and without a spec there is no data)."""
        return None

    def keeps_batchnorm_statistics(self, data: DatasetSplits) -> bool:
        """True: on ``data``, keep the float model's BatchNorm statistics — no re-estimation after calibration
        or training, and no warning at export that nothing recomputed them. For data whose batch statistics
        are not the real inputs', e.g. images synthesised to *match* the float statistics (re-estimating on
        them moves the statistics away from what real images produce). Default: re-estimate."""
        return False

    def step_strategy(self) -> StepStrategy | None:
        """None: the loop's standard step (forward, loss, backward, optimizer step)."""
        return None

    def task(self) -> str | Task | None:
        """The task this method trains for (a registered name or a :class:`~qcompile.tasks.Task`, e.g. a
        codec's rate–distortion task). None: whatever the model/API asks for (classification by default)."""
        return None

    # ----------------------------------------------------------------- export
    def export_passes(self, plan: QuantPlan) -> list[GraphPass]:
        """fx passes run after the core's (StripForExport → FoldBatchNorm), on what ONNX will compute."""
        return []

    def onnx_passes(self, plan: QuantPlan) -> list[ir.passes.PassBase]:
        """``onnx_ir`` passes run right after DecodeWeight lowering, so the cleanup passes that follow
        (unused nodes and opsets, metadata, compaction) apply to what they add."""
        return []

    def export_artifact(self, compiled: Any, path: Path | None, opset: int | None) -> Any:
        """Write an artifact of the method's own kind (e.g. DynaDFQ's ``dynamic`` bundle: selector + model)
        at ``path`` and return its :class:`~qcompile.export.onnx_export.ExportReport`; with ``path`` None,
        build and check it, write nothing, return True (the dry run before training). Default False:
        the core's single-graph export."""
        return False

    def label(self, spec: QuantSpec) -> str:
        """How plots and tables name a run; runs that share it are seeds of one configuration."""
        return f"{self.name} {spec.label()}"
