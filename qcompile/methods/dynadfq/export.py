"""The ``dynamic`` artifact: one bundle with the selector graph and the multi-width model graph.

* ``selector.onnx``: images (normalised, N×C×H×W) → int64 (N, L), each dynamic layer's candidate index;
* ``model.onnx``: (images, widths) → class scores, ``widths`` an int64 (L,) vector of candidate indices
  for the whole batch (:mod:`.width_inputs`: the nested codes stored once, packed at the widest width);
* the manifest (kind ``dynamic``) records, under ``dynamic``, the candidates, the dynamic layers with
  their MACs per image, the selector's MACs and the BitOPs of the layers that are not dynamic, so the
  runtime can report bits and BitOPs per image without torch.

The runtime (:mod:`qcompile.runtime.dynamic`) runs the selector, groups a batch by configuration and
runs the model graph once per group. Why one graph with a widths input rather than one graph per
configuration: K^L configurations (243 for five layers at three widths) would each hold their codes; here
the file is the max-width static graph plus the selector and a few tables.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from torch import nn

from qcompile.errors import ExportError
from qcompile.export.artifact import write_bundle
from qcompile.export.onnx_export import ExportReport, check_onnx, choose_opset, quiet_exporter, torch_to_onnx_ir
from qcompile.export.onnx_passes import export_pipeline
from qcompile.methods.dynadfq.cost import layer_costs
from qcompile.methods.dynadfq.insert_selector import SELECTOR, remove_selector
from qcompile.methods.dynadfq.selector import Int8Linear
from qcompile.methods.dynadfq.width_inputs import add_widths_input
from qcompile.passes.freeze_for_export import FreezeForExport
from qcompile.passes.pipeline import export_passes, run_passes

KIND = "dynamic"


class SelectorIndices(nn.Module):
    """The selector's deterministic decision: the arg-max candidate index per layer."""

    def __init__(self, selector: nn.Module):
        super().__init__()
        self.selector = selector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.selector.logits(x).argmax(dim=-1)


def _model_graph(module: nn.Module, x: torch.Tensor, layers: int, opset: int) -> onnx.ModelProto:
    widths = torch.zeros(layers, dtype=torch.int64)
    x = x if x.shape[0] >= 2 else x.expand(2, *x.shape[1:]).contiguous()
    with quiet_exporter():
        try:
            program = torch.onnx.export(module, (x, widths), dynamo=True, verbose=False, opset_version=opset,
                                        dynamic_shapes=({0: torch.export.Dim("batch")}, None))
        except Exception as e:
            raise ExportError(f"the multi-width model could not be exported to ONNX: {e}",
                              hint="this is a qcompile bug; please report it with the model") from e
    return _finish(program.model)


def _finish(model: ir.Model) -> onnx.ModelProto:
    """The static export's ONNX pipeline (decode lowering, cleanup, compaction), then the checker."""
    for p in export_pipeline({}):
        p(model)
    proto = ir.serde.serialize_model(model)
    check_onnx(proto)
    return proto


def dynamic_graphs(compiled, opset: int | None = None):
    """(selector proto, model proto, manifest fields) of a compiled model with a bit selector."""
    gm = copy.deepcopy(compiled.graph_module).cpu().eval()
    selector, wrappers = remove_selector(gm)
    candidates = selector.candidates
    gm, _ = run_passes(gm, export_passes())
    layers = add_widths_input(gm, {name: w.index for name, w in wrappers.items()}, candidates)
    freeze = FreezeForExport()  # the layers that are not dynamic (e.g. kept at 8 bits), as in a static export
    freeze(gm)
    layers += freeze.report.get("layers", [])
    opset = choose_opset(layers, opset)
    x = compiled.example_inputs[0].cpu()
    model = _model_graph(gm, x, selector.layers, opset)
    selector_proto = _finish(torch_to_onnx_ir(SelectorIndices(int8_selector(selector)).eval(), (x,), opset))
    costs = {c.name: c for c in layer_costs(compiled.inspect()["sites"])}
    order = sorted(wrappers, key=lambda n: wrappers[n].index)
    info = {"candidates": list(candidates), "layers": order, "macs": [int(wrappers[n].macs) for n in order],
            "selector_macs": selector.macs,
            "static_bitops": int(sum(c.bitops() for n, c in costs.items() if n not in wrappers))}
    if any(m == 0 for m in info["macs"]):
        raise ExportError("the dynamic layers' MACs were never measured (the model never ran)",
                          hint="calibrate or finetune on data before export")
    return selector_proto, model, layers, opset, info


def int8_selector(selector: nn.Module) -> nn.Module:
    """A copy of the selector whose Linear layers hold int8 codes (what its eval computes, stored small)."""
    selector = copy.deepcopy(selector).cpu().eval()
    selector.hidden, selector.out = Int8Linear(selector.hidden), Int8Linear(selector.out)
    return selector


def check_selector_exports(compiled) -> None:
    """The dry run before training (ranges not calibrated yet, so the model graph cannot be frozen): the
    selector converts to ONNX; the model graph is made of the frozen ops every static export uses."""
    selector = copy.deepcopy(compiled.graph_module.get_submodule(SELECTOR)).cpu().eval()
    torch_to_onnx_ir(SelectorIndices(int8_selector(selector)), (compiled.example_inputs[0].cpu(),), 21)


def export_dynamic(compiled, path: str | Path, opset: int | None = None) -> ExportReport:
    """Write the bundle at ``path`` atomically."""
    selector, model, layers, opset, info = dynamic_graphs(compiled, opset)
    manifest = dataclasses.replace(compiled.manifest(), kind=KIND, layers=tuple(layers), extra={KIND: info})
    size = write_bundle(path, manifest, {"selector": selector, "model": model})
    return ExportReport(Path(path), opset, model.ir_version, size, layers, ["dynamic bundle: selector + model"])
