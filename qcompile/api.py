"""The Python API, mirroring the CLI: ``compile`` → :class:`CompiledModel` → finetune / export.

    cm = qcompile.compile(model, input_shape=(1, 1, 28, 28), w_bits=4, a_bits=8, data="digits")
    cm.finetune(epochs=2)
    cm.export("model.onnx")

Data flows one way: model → trace → plan → quantize passes → training → export passes → ONNX.
The float model is kept (deep-copied) as the distillation teacher and the fp32 reference. What the
model is trained and judged for is its task (:mod:`qcompile.tasks`): the method's when it names one,
else ``compile(..., task=...)``, else classification. What the artifact records about its input — the
normalisation (given, a preset, or the training split's statistics) and the class names — is fixed
the first time it is known and kept on the model, so a saved run exports without its data.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from qcompile.data import DatasetSplits, load_dataset
from qcompile.errors import ConfigError, ExportError, QCompileWarning
from qcompile.example_run import run_example
from qcompile.loading import load_model
from qcompile.methods import Method, get_method
from qcompile.modes import preserved_modes
from qcompile.passes.pipeline import export_passes, quantize_passes, run_passes
from qcompile.passes.sites import float_ops, propagate_shapes
from qcompile.passes.trace import example_inputs_for, trace
from qcompile.plan import QuantPlan, QuantSpec, build_plan
from qcompile.quantizers import ActivationQuantizer
from qcompile.runtime.manifest import InputSpec, Manifest
from qcompile.runtime.normalisation import FROM_DATA, Normalization
from qcompile.runtime.normalisation import choose as choose_normalization
from qcompile.targets import build_for_target, target_fields
from qcompile.tasks import Task, get_task
from qcompile.train import Batches, TrainConfig, TrainResult, evaluate, finetune
from qcompile.train.batchnorm_stats import batchnorms, reestimate_batchnorm, statistics_unchanged
from qcompile.train.divergence import first_non_finite


def _choose_task(method: Method, requested: Task | str | None) -> Task:
    """The method's task when it names one, else ``requested`` (default classification). A method trains
    for its own task only, so asking it for another one is an error."""
    own = method.task()
    if own is None:
        return get_task(requested)
    task = get_task(requested if requested is not None else own)
    if task.name != get_task(own).name:
        raise ConfigError(f"method {method.name!r} trains for task {get_task(own).name!r}, not {task.name!r}",
                          hint=f"drop task=..., or pass task={get_task(own).name!r}")
    return task


class CompiledModel:
    """A traced, quantized model plus everything needed to train, evaluate and export it."""

    def __init__(self, float_model: nn.Module, graph_module: fx.GraphModule, plan: QuantPlan, method: Method,
                 example_inputs: tuple[torch.Tensor, ...], data: DatasetSplits | None = None,
                 leaf_modules: Sequence[str] = (), reports: list[dict] | None = None, task: Task | str | None = None,
                 normalization: Normalization | None = None):
        self.float_model = float_model
        self.graph_module = graph_module
        self.plan = plan
        self.method = method
        self.task = get_task(task)
        self.example_inputs = example_inputs
        self.data = data
        self.leaf_modules = list(leaf_modules)
        self.reports = list(reports or [])
        self.history: list[dict] = []  # per-epoch records of every finetune call, tagged with its "stage"
        self.stages = 0  # finetune calls started (a resumed call continues its stage)
        self.open_stage: int | None = None  # the stage a stopped (resumable) finetune call left unfinished
        self.data_spec: str | None = None  # the spec string data came from, so a saved run can reload it
        self.model_spec: str | None = None  # likewise for the model ('file.py:factory'), when given as a string
        self._example_outputs: Any = None
        self.normalization: Normalization | None = None  # None until given or computed from the first data
        self.classes: list[str] | None = None  # class names, from the first data (None: not known)
        if normalization is not None:
            self.set_normalization(normalization)

    # ----------------------------------------------------------------- analysis
    def inspect(self) -> dict[str, Any]:
        """Sites (shape, params, MACs per sample, planned bits), ops left in float and why, pass reports."""
        infos = {i.name: i for i in propagate_shapes(copy.deepcopy(self.float_graph()), self.example_inputs)}
        sites = []
        for sp in self.plan.sites:
            info = infos.get(sp.name)
            sites.append({**asdict(sp), "weight_shape": list(info.weight_shape) if info else None,
                          "params": info.params if info else None, "macs": info.macs if info else None,
                          "output_shape": list(info.output_shape) if info and info.output_shape else None})
        return {
            "method": self.method.name,
            "spec": self.plan.spec.to_dict(),
            **target_fields(self.plan),
            "sites": sites,
            "float_ops": [asdict(f) for f in float_ops(self.float_graph(), self.leaf_modules)],
            "total_params": sum(s["params"] or 0 for s in sites),
            "total_macs": sum(s["macs"] or 0 for s in sites),
            "passes": self.reports,
        }

    def float_graph(self) -> fx.GraphModule:
        return trace(self.float_model, self.leaf_modules)

    # ----------------------------------------------------------------- data + training
    def load_data(self, data: DatasetSplits | str | None) -> DatasetSplits | None:
        """``data`` as splits: splits as given; a spec, or None for "no spec", goes to the method's
        ``data_source`` first (e.g. a pool synthesised from the model), then to qcompile's loaders.
        None when neither has data."""
        if data is not None and not isinstance(data, str):
            return data
        provided = self.method.data_source(data, self.float_model, self.example_inputs)
        if provided is not None:
            return provided
        return load_dataset(data) if data is not None else None

    def use_data(self, data: DatasetSplits | str | None = None) -> DatasetSplits:
        """The data a step works on: ``data`` when given (it becomes the model's data), else the model's.
        Checked against the input shape and the task's outputs; the first data seen fixes the
        normalisation (unless one was given) and the class names."""
        resolved = self.load_data(data) if data is not None else self.data
        if resolved is None:
            resolved = self.load_data(self.data_spec)
        if resolved is None:
            raise ConfigError("this step needs data", hint="pass data='digits' | 'mnist:PATH' | 'folder:PATH' | 'npz:PATH' (CLI: --data)")
        self._check_data_shape(resolved)
        outputs = self.example_outputs()
        for split in ("train", "test"):
            if getattr(resolved, split, None) is not None:
                self.task.check_targets(getattr(resolved, split).y, outputs, split)
        if isinstance(data, str):
            self.data_spec = data
        if self.normalization is None:
            self.set_normalization(Normalization(resolved.mean, resolved.std, FROM_DATA))
        if self.classes is None:
            self.classes = list(resolved.classes)
        self.data = resolved
        return resolved

    @property
    def input_channels(self) -> int:
        """Channels of the (first) input: axis 1, which normalisation runs over."""
        shape = self.example_inputs[0].shape
        return int(shape[1]) if len(shape) >= 2 else 1

    def set_normalization(self, normalization: Normalization | str) -> None:
        """Fix the input normalisation (a :class:`Normalization` or a preset name). The model trains and is
        judged with it, so once fixed it may only be given again with the same values."""
        norm = choose_normalization(normalization)
        if norm is None:  # 'data': computed when data arrives, or kept if already known
            return
        norm = norm.for_channels(self.input_channels)
        current = self.normalization
        if current is not None and (current.mean, current.std) != (norm.mean, norm.std):
            raise ConfigError(f"this model's input normalisation is already fixed ({current.describe()}); "
                              f"it cannot become {norm.describe()}",
                              hint="drop the normalisation option: a model keeps the one it was calibrated and trained "
                                   "with (compile again to choose another)")
        if current is None:
            self.normalization = norm

    def example_outputs(self) -> Any:
        """The float model's outputs on the example inputs (computed once): what the task checks data against."""
        if self._example_outputs is None:
            self._example_outputs = run_example(self.float_model, self.example_inputs)
        return self._example_outputs

    def _check_data_shape(self, splits: DatasetSplits) -> None:
        """Images must have the example input's per-sample shape: catch it here, not deep in a conv."""
        expected = tuple(self.example_inputs[0].shape[1:])
        if tuple(splits.input_shape) != expected:
            got, want = "×".join(map(str, splits.input_shape)), "×".join(map(str, expected))
            raise ConfigError(f"the data's images are {got} but the model's example input is {want}",
                              hint="pass --data that matches the model (e.g. mnist:DIR for 1×28×28), or --input-shape "
                                   f"1,{','.join(map(str, splits.input_shape))}")

    def activation_quantizers(self) -> list[ActivationQuantizer]:
        return [m for m in self.graph_module.modules() if isinstance(m, ActivationQuantizer)]

    @torch.no_grad()
    def calibrate(self, data: DatasetSplits | str | None = None, batches: int = 16, batch_size: int = 64,
                  bn_reestimate_batches: int = 64) -> int:
        """Observe activation ranges (EMA of min/max) on training images, BN kept in eval mode, and
        re-estimate BatchNorm statistics with the quantized weights; returns the images observed.

        Why both: BN's running statistics describe the float weights' outputs. Quantized weights
        (1-bit ones above all) move every channel's statistics, so a calibrate-only model with the float
        statistics can output logits of 1e4..1e12. With BatchNorm and ``bn_reestimate_batches > 0``,
        the statistics are recomputed on that many training batches (as after QAT, see
        :mod:`qcompile.train.batchnorm_stats`), then the activation ranges, which BN's outputs feed,
        are observed again under them.
        """
        quantizers = self.activation_quantizers()
        reestimate = bn_reestimate_batches > 0 and bool(batchnorms(self.graph_module))
        if not quantizers and not reestimate:
            return 0
        splits = self.use_data(data)
        reestimate = reestimate and not self.method.keeps_batchnorm_statistics(splits)
        seen = self._observe_ranges(splits, quantizers, batches, batch_size)
        if reestimate:
            norm = self.normalization
            reestimate_batchnorm(self.graph_module, splits.train, batches=bn_reestimate_batches,
                                 batch_size=batch_size, mean=norm.mean, std=norm.std, task=self.task)
            for q in quantizers:
                if not bool(q.frozen):  # a frozen range (after QAT) is kept, as observing would keep it
                    q.reset()  # observed under the float weights' statistics
            seen = self._observe_ranges(splits, quantizers, batches, batch_size)
        return seen

    def _observe_ranges(self, splits: DatasetSplits, quantizers: list[ActivationQuantizer], batches: int,
                        batch_size: int) -> int:
        """Run up to ``batches`` training batches with only the activation quantizers in train mode."""
        if not quantizers:
            return 0
        gm = self.graph_module
        seen = 0
        with preserved_modes(gm, train=False):
            for q in quantizers:
                q.train()
            device = next(gm.parameters()).device
            norm = self.normalization
            loader = Batches(splits.train, batch_size, device, norm.mean, norm.std, self.task)
            for i, (inputs, _) in enumerate(loader.in_order()):
                if i >= batches:
                    break
                gm(inputs)
                seen += len(inputs)
        return seen

    def finetune(self, data: DatasetSplits | str | None = None, *, config: TrainConfig | None = None,
                 freeze_act_after: int = 1, bn_reestimate_batches: int = 64, checkpoint_dir: str | Path | None = None,
                 resume: bool = False, progress: bool = True, **train_options: Any) -> TrainResult:
        """QAT on ``data``; activation ranges follow an EMA for ``freeze_act_after`` epochs, then freeze.

        After training, BatchNorm statistics are re-estimated with the final weights on
        ``bn_reestimate_batches`` training batches (0 = off; see :mod:`qcompile.train.batchnorm_stats`),
        unless ``freeze_bn_after`` froze them for the last epochs: then the model those epochs trained is kept.
        With frozen statistics and frozen ranges, an ``ort-int8`` model trains through the integer kernels'
        arithmetic, the forward its export runs (see :mod:`qcompile.integer`).
        ``train_options`` are :class:`~qcompile.train.TrainConfig` fields (epochs, lr, optimizer, kd_alpha, ...).
        Given with a ``config``, they override its fields (``finetune(config=base, lr=1e-3)`` is ``base`` with
        lr=1e-3), and the result is validated as a whole; an unknown name is a ConfigError. ``mean``/``std``
        left unset (None) are the model's normalisation, as in calibration and evaluation.
        """
        splits = self.use_data(data)
        config = _train_config(config, train_options, self.normalization)
        quantizers = self.activation_quantizers()
        if quantizers and not any(bool(q.calibrated) for q in quantizers):
            self.calibrate(splits, bn_reestimate_batches=bn_reestimate_batches)
        teacher = self.float_model if config.kd_alpha > 0 else None

        def freeze_ranges(event: str, state) -> None:
            if event == "epoch_end" and state.epoch + 1 >= freeze_act_after:
                for q in self.activation_quantizers():
                    q.freeze()

        result = finetune(self.graph_module, splits.train, splits.test, config, strategy=self.method.step_strategy(),
                          teacher=teacher, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                          callbacks=(freeze_ranges,), task=self.task)
        self._record(result, resume)
        # Statistics frozen for the last epochs are part of the model those epochs trained: re-estimating them
        # would change it.
        frozen = config.batchnorm_frozen(config.epochs - 1)
        if result.completed and bn_reestimate_batches > 0 and not frozen \
                and not self.method.keeps_batchnorm_statistics(splits):
            reestimate_batchnorm(self.graph_module, splits.train, batches=bn_reestimate_batches,
                                 batch_size=config.batch_size, mean=config.mean, std=config.std, task=self.task)
            if splits.test is not None and result.history:
                summary = evaluate(self.graph_module, splits.test, mean=config.mean, std=config.std, task=self.task)
                self.history[-1].update({f"test_{k}_bn_reestimated": v for k, v in summary.items()})
        return result

    def _record(self, result: TrainResult, resume: bool) -> None:
        """Add a finetune call's epochs to ``history``. A resumed call reports the epochs of the call it
        continues too, so it replaces that stage's records instead of adding them twice."""
        if resume and self.open_stage is not None:
            stage = self.open_stage
        else:
            stage, self.stages = self.stages, self.stages + 1
        self.history = [h for h in self.history if h.get("stage", 0) != stage]
        self.history += [{**h, "stage": stage} for h in result.history]
        self.open_stage = None if result.completed else stage

    def evaluate(self, data: DatasetSplits | str | None = None, *, model: nn.Module | None = None) -> float:
        """The task's headline metric of the quantized model (or ``model``) on the test split, in PyTorch:
        for classification, top-1 accuracy in [0, 1]."""
        return self.metrics(data, model=model)[self.task.headline]

    def metrics(self, data: DatasetSplits | str | None = None, *, model: nn.Module | None = None) -> dict[str, float]:
        """The task's whole evaluation summary (classification: ``acc`` and ``loss``) on the test split."""
        splits = self.use_data(data)
        norm = self.normalization
        return evaluate(model or self.graph_module, splits.test, mean=norm.mean, std=norm.std, task=self.task)

    # ----------------------------------------------------------------- export
    def deployable(self) -> fx.GraphModule:
        """A copy with training machinery stripped and BatchNorm folded: what the ONNX file computes."""
        gm = copy.deepcopy(self.graph_module).cpu()
        gm, _ = run_passes(gm, export_passes(self.method.export_passes(self.plan)))
        return gm

    def manifest(self) -> Manifest:
        """What the artifact says about itself besides its layers (the export adds those)."""
        from qcompile.export.artifact import manifest

        norm = self.normalization
        spec = InputSpec(shape=(None, *self.example_inputs[0].shape[1:]), dtype="float32",
                         mean=norm.mean if norm else None, std=norm.std if norm else None)
        return manifest("classifier", method=self.method.name, task=self.task.name, input=spec,
                        classes=None if self.classes is None else tuple(self.classes))

    def export(self, path: str | Path, opset: int | None = None):
        """Write the packed low-bit ONNX artifact (atomically); returns the export report."""
        from qcompile.export.onnx_export import export_onnx

        self._check_exportable()
        own = self.method.export_artifact(self, Path(path), opset)
        if own is not False:
            return own
        gm = self.deployable()
        return export_onnx(gm, tuple(t.cpu() for t in self.example_inputs), path, self.manifest(), opset=opset,
                           onnx_passes=self.method.onnx_passes(self.plan))

    def _check_exportable(self) -> None:
        """Non-finite weights are an ExportError (a diverged model is never written); BatchNorm statistics
        never recomputed for the quantized weights are a :class:`~qcompile.errors.QCompileWarning`."""
        bad = first_non_finite(self.graph_module.state_dict())
        if bad is not None:
            raise ExportError(f"the model's {bad!r} holds NaN or inf values: it cannot be exported",
                              hint="training diverged; compile again (with a lower learning rate) instead of "
                                   "exporting this model")
        kept = self.data is not None and self.method.keeps_batchnorm_statistics(self.data)
        if any(s.quantized for s in self.plan.sites) and not kept and statistics_unchanged(self.graph_module,
                                                                                            self.float_model):
            warnings.warn(QCompileWarning(
                "the BatchNorm statistics are those of the float weights: nothing recomputed them for the quantized "
                "weights, so the exported model may output huge or meaningless values (1-bit weights above all)",
                hint="calibrate on data before exporting (CLI: --data, with --bn-reestimate N > 0; API: "
                     "compile(..., data=...) or cm.calibrate(data)), or finetune"), stacklevel=3)

    def dry_run_export(self) -> None:
        """Convert the deployable model to ONNX in memory, writing nothing: a model that cannot be exported
        (e.g. a leaf module branching on tensor values) fails with an :class:`ExportError` naming the module
        and line, before training spends time on it."""
        from qcompile.export.onnx_export import check_exportable

        if self.method.export_artifact(self, None, None) is not False:
            return
        check_exportable(self.deployable(), tuple(t.cpu() for t in self.example_inputs))

    def export_float(self, path: str | Path):
        """Write the fp32 ONNX of the original model (the reference for size and latency)."""
        from qcompile.export.onnx_export import export_float_onnx

        return export_float_onnx(copy.deepcopy(self.float_model).cpu().eval(), tuple(t.cpu() for t in self.example_inputs), path)


def _train_config(config: TrainConfig | None, options: dict[str, Any], norm: Normalization) -> TrainConfig:
    """``config`` (default: TrainConfig's defaults) with ``options`` on top, normalised like the model unless
    the config or the options say otherwise."""
    fields = {**(config.to_dict() if config is not None else {}), **options}
    if fields.get("mean") is None and fields.get("std") is None:
        fields.update(mean=norm.mean, std=norm.std)
    return TrainConfig.from_dict(fields)


def compile(model: nn.Module | str, example_inputs: Sequence[torch.Tensor] | torch.Tensor | None = None, *,
            input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None, weights: str | Path | None = None,
            method: str = "ste", w_bits: int = 4, a_bits: int | None = 8, quantizer: str = "uniform",
            per_channel: bool | None = None, first_layer: str = "quantize", last_layer: str = "quantize",
            layer_bits: dict[str, int] | None = None, method_options: dict | None = None,
            group_size: int | None = None, leaf_modules: Sequence[str] = (), data: DatasetSplits | str | None = None,
            spec: QuantSpec | None = None, task: Task | str | None = None,
            bn_reestimate_batches: int = 64, normalization: Normalization | str | None = None,
            mean: Sequence[float] | float | None = None, std: Sequence[float] | float | None = None,
            target: str = "auto") -> CompiledModel:
    """Trace ``model``, plan and insert quantizers; returns a :class:`CompiledModel` ready to finetune.

    ``model`` is an ``nn.Module`` or a spec ``'file.py:factory'`` / ``'pkg.mod:attr'`` (with ``weights``).
    Give ``example_inputs`` or ``input_shape`` (batch included, e.g. ``(1, 1, 28, 28)``).
    With ``data``, activation ranges are calibrated right away and BatchNorm statistics re-estimated with
    the quantized weights on ``bn_reestimate_batches`` training batches (0 = off; see
    :meth:`CompiledModel.calibrate`). Without it, data is read when a step needs it: the method's own
    (its ``data_source``), if it provides any. ``task`` (a name or a
    :class:`~qcompile.tasks.Task`) is what the model is trained for; a method that names its own task
    decides it, and the default is classification.

    ``normalization`` is what the model expects of images in [0, 1]: a preset ('imagenet', 'cifar10',
    'mnist', 'none'), 'data' (the default: the training split's per-channel statistics) or a
    :class:`~qcompile.runtime.normalisation.Normalization`; or give ``mean`` and ``std`` (one value, or one
    per input channel). A pretrained model needs the values it was trained with.

    ``target`` is what the export runs on: ``'exact'`` (integer-domain arithmetic in float, bit-exact in
    any runtime), ``'ort-int8'`` (onnxruntime's 8-bit integer kernels; 8-bit activations; the model's
    eval then computes what those kernels compute, see :mod:`qcompile.integer`), or ``'auto'`` (the
    default: ``ort-int8`` for an STE uniform W2..8A8 model on an x86 CPU, else ``exact``; see
    :mod:`qcompile.targets`). ``plan.spec.target`` is the one chosen and ``plan.target_reason`` says why.
    A ``spec`` given whole replaces the keyword options, ``target`` included: ``QuantSpec``'s own default is
    ``'exact'`` (what a run saved before targets existed holds), so pass ``QuantSpec(..., target='auto')``
    for the keyword default.
    """
    requested_norm = choose_normalization(normalization, mean, std)  # malformed values fail before any work
    float_model = copy.deepcopy(load_model(model, weights)).eval()
    if example_inputs is None:
        if input_shape is None:
            raise ConfigError("compile needs example inputs", hint="pass example_inputs=... or input_shape=(1, C, H, W) (CLI: --input-shape 1,1,28,28)")
        shapes = [tuple(input_shape)] if isinstance(input_shape[0], int) else [tuple(s) for s in input_shape]
        example_inputs = example_inputs_for(shapes)
    elif isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_outputs = run_example(float_model, example_inputs)
    spec = spec or QuantSpec(method=method, w_bits=w_bits, a_bits=a_bits, quantizer=quantizer, per_channel=per_channel,
                             first_layer=first_layer, last_layer=last_layer, overrides=dict(layer_bits or {}),
                             method_options=dict(method_options or {}), group_size=group_size,
                             target=target)
    plugin = get_method(spec.method, spec.method_options)

    def quantized(spec: QuantSpec):  # trace → plan → quantize passes, for one target
        gm = trace(copy.deepcopy(float_model), leaf_modules)
        plan = build_plan(gm, spec)
        return run_passes(gm, quantize_passes(plan, plugin.weight_quantizer, plugin.extra_passes(plan),
                                              plugin.activation_quantizer)), plan

    ((gm, reports), plan), plan_reason = build_for_target(plugin.plan_spec(spec), quantized)
    plan.target_reason = plan_reason
    compiled = CompiledModel(float_model, gm, plan, plugin, tuple(example_inputs), None, leaf_modules, reports,
                             _choose_task(plugin, task), requested_norm)
    compiled._example_outputs = example_outputs
    compiled.model_spec = model if isinstance(model, str) else None
    if data is not None:
        compiled.use_data(data)
        compiled.calibrate(bn_reestimate_batches=bn_reestimate_batches)
    return compiled
