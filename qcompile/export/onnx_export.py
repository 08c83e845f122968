"""Export a quantized GraphModule to standard ONNX with packed low-bit weights.

    deepcopy → FreezeForExport → torch.onnx.export(dynamo) → onnx_passes → checker → atomic write

The file holds INT4/INT2/... initializers feeding DequantizeLinear, activation quantization as
Div → Round → Clip(qmin, qmax), and the artifact manifest in ``metadata_props``
(:mod:`qcompile.export.artifact`), whose per-layer records come from this export alone. Nothing is
written unless every step, the full ONNX checker included, succeeds: the model goes to a temporary
file in the target folder and is moved into place with ``os.replace``. :func:`export_graph` stops
before writing, for artifacts of several graphs (:func:`~qcompile.export.artifact.write_bundle`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ClearMetadataAndDocStringPass
import torch
from torch import fx, nn

from qcompile.atomic import atomic_write
from qcompile.errors import ExportError
from qcompile.export.artifact import manifest as new_manifest
from qcompile.export.artifact import manifest_props
from qcompile.export.failure import explain_export_failure
from qcompile.export.frozen_block import CONTRIB_OPS_FIELD, contrib_ops
from qcompile.export.onnx_passes import export_pipeline
from qcompile.export.qdq.freeze import FreezeIntegerKernels
from qcompile.export.qdq.weight_zero_points import AddWeightZeroPoints
from qcompile.integer import EXACT, ORT_INT8, TARGET_FIELD, export_target
from qcompile.passes.freeze_for_export import FreezeForExport
from qcompile.runtime.dithered import DITHER_FIELD, DITHER_LOCATION, dither_field
from qcompile.runtime.errors import ArtifactError
from qcompile.runtime.manifest import SESSION_TARGET_FORMAT, Manifest

DEFAULT_OPSET = 21  # INT4/UINT4 in DequantizeLinear
INT2_OPSET = 25  # INT2/UINT2 (ONNX 1.20, ORT >= 1.24)


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how."""

    path: Path
    opset: int
    ir_version: int
    file_bytes: int
    layers: list[dict] = field(default_factory=list)  # FreezeForExport's per-layer summary
    onnx_passes: list[str] = field(default_factory=list)  # the ONNX passes that changed the model


@dataclass
class ExportedGraph:
    """One exported, checked graph, not yet written: what a bundle writer puts beside others."""

    proto: onnx.ModelProto
    opset: int
    layers: list[dict]  # FreezeForExport's per-layer summary: the manifest's layer records
    onnx_passes: list[str]


def _as_tuple(example_inputs) -> tuple[torch.Tensor, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def _with_batch_of_two(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """torch.export specialises a batch of 1 to a constant; a batch of 2 keeps the dim symbolic."""
    return tuple(x if x.shape[0] >= 2 else x.expand(2, *x.shape[1:]).contiguous() for x in inputs)


@contextlib.contextmanager
def quiet_exporter():
    """Swallow the exporter's prints, warnings and log lines (torch's loggers write to the terminal they were
    set up with, so they are muted rather than redirected); a failure keeps the prints as its detail."""
    buffer = io.StringIO()
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        logging.disable(logging.NOTSET)


def torch_to_onnx_ir(module: nn.Module, example_inputs, opset: int) -> ir.Model:
    """``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension, silenced; an ``onnx_ir`` model."""
    inputs = _with_batch_of_two(_as_tuple(example_inputs))
    batch = torch.export.Dim("batch")
    with quiet_exporter() as log:
        try:
            program = torch.onnx.export(module, inputs, dynamo=True, verbose=False, opset_version=opset,
                                        dynamic_shapes=tuple({0: batch} for _ in inputs))
        except Exception as e:
            raise explain_export_failure(e, log.getvalue(), module) from e
    return program.model


def write_atomically(proto: onnx.ModelProto, path: str | Path) -> int:
    """Write ``proto`` to ``path`` through a temporary file in the same folder; return its size."""
    return atomic_write(path, lambda f: f.write(proto.SerializeToString()))


def _checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto``, or a copy whose regenerated (external, :data:`DITHER_LOCATION`) tensors hold zeros: the
    full checker reads external data from disk, and these have none by design."""
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                and any(e.key == "location" and e.value == DITHER_LOCATION for e in t.external_data)]
    if not external:
        return proto
    copy_ = onnx.ModelProto()
    copy_.CopyFrom(proto)
    for t in copy_.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL and any(e.value == DITHER_LOCATION for e in t.external_data):
            t.ClearField("external_data")
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = bytes(4 * math.prod(t.dims))
    return copy_


def check_onnx(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(_checkable(proto), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported model fails the ONNX checker: {e}",
                          hint="this is a qcompile bug; please report it with the model") from e


def choose_opset(layers: list[dict], requested: int | None) -> int:
    needed = INT2_OPSET if any(layer["weight_format"].endswith("int2") for layer in layers) else DEFAULT_OPSET
    if requested is None:
        return needed
    if requested < needed:
        raise ExportError(f"opset {requested} cannot hold these weights; they need opset >= {needed}",
                          hint=f"pass opset={needed} or higher (INT4 needs 21, INT2 needs 25), or leave it unset")
    return requested


def _frozen(gm: fx.GraphModule) -> tuple[fx.GraphModule, list[dict]]:
    """A frozen copy of ``gm`` (``gm`` is not modified) and the freeze pass's per-layer summary: the
    integer-kernel (QDQ) form for a graph of the ``ort-int8`` target, else the exact form."""
    frozen = copy.deepcopy(gm).eval()
    freeze = FreezeIntegerKernels() if export_target(gm) == ORT_INT8 else FreezeForExport()
    freeze(frozen)
    return frozen, freeze.report["layers"]


def check_exportable(gm: fx.GraphModule, example_inputs) -> None:
    """Convert ``gm`` to ONNX in memory as :func:`export_graph` would, writing nothing: a model that cannot be
    exported (e.g. a leaf module branching on tensor values) fails here, before it is trained."""
    frozen, layers = _frozen(gm)
    torch_to_onnx_ir(frozen, example_inputs, choose_opset(layers, None))


def export_graph(gm: fx.GraphModule, example_inputs, opset: int | None = None, manifest: Manifest | None = None,
                 onnx_passes: Sequence[ir.passes.PassBase] = ()) -> ExportedGraph:
    """Freeze, export and check a stripped, BN-folded quantized GraphModule; ``gm`` is not modified.

    With ``manifest``, it goes into ``metadata_props`` with its ``layers`` set from this export (the
    one source of per-layer facts: the storage format each layer really got). ``opset`` defaults to
    21, or 25 when a layer has 2-bit weights. ``onnx_passes`` (a method's) join the ONNX pipeline
    (see :func:`~qcompile.export.onnx_passes.export_pipeline`).
    """
    frozen, layers = _frozen(gm)
    opset = choose_opset(layers, opset)
    metadata = {} if manifest is None else _props(_with_layers(manifest, layers, export_target(gm)))
    model = torch_to_onnx_ir(frozen, example_inputs, opset)
    changed = []
    if export_target(gm) == ORT_INT8:
        onnx_passes = [*onnx_passes, AddWeightZeroPoints()]
    for p in export_pipeline(metadata, onnx_passes):
        try:
            if p(model).modified:
                changed.append(type(p).__name__)
        except ir.passes.PassError as e:
            raise ExportError(f"ONNX pass {type(p).__name__} failed: {e}", hint="this is a qcompile bug") from e
    proto = ir.serde.serialize_model(model)
    check_onnx(proto)
    return ExportedGraph(proto, opset, layers, changed)


def export_onnx(gm: fx.GraphModule, example_inputs, path: str | Path, manifest: Manifest | None = None,
                opset: int | None = None, onnx_passes: Sequence[ir.passes.PassBase] = ()) -> ExportReport:
    """Export a stripped, BN-folded quantized GraphModule to one ``.onnx`` file at ``path``.

    ``manifest`` (default: a classifier's, with nothing but this export's layers) is written into
    the file; see :func:`export_graph`.
    """
    graph = export_graph(gm, example_inputs, opset, manifest or new_manifest("classifier"), onnx_passes)
    size = write_atomically(graph.proto, path)
    return ExportReport(Path(path), graph.opset, graph.proto.ir_version, size, graph.layers, graph.onnx_passes)


def _with_layers(manifest: Manifest, layers: list[dict], target: str) -> Manifest:
    """``manifest`` with this export's layers, and the records of seeded-dither weights in its ``dither`` field."""
    dither = dither_field(layer["dither"] for layer in layers if "dither" in layer)
    extra = {**manifest.extra, DITHER_FIELD: dither} if dither else manifest.extra
    if contrib := contrib_ops(layers):  # e.g. MatMulNBits: the file needs onnxruntime
        extra = {**extra, CONTRIB_OPS_FIELD: contrib}
    if target == EXACT:
        return dataclasses.replace(manifest, layers=tuple(layers), extra=extra)
    # a reader of format 1 would ignore the target and run the file without its integer kernels: refuse it there
    return dataclasses.replace(manifest, layers=tuple(layers), extra={**extra, TARGET_FIELD: target},
                               format=max(manifest.format, SESSION_TARGET_FORMAT))


def _props(manifest: Manifest) -> dict[str, str]:
    try:
        return manifest_props(manifest)
    except ArtifactError as e:  # e.g. a NaN mean: the runtime would refuse the file, so do not write it
        raise ExportError(f"the artifact's manifest is invalid: {e.message}",
                          hint="normalisation needs a finite mean and a finite std >= 1e-6 per channel (rescale data "
                               "whose spread is smaller); class names must be strings") from None


def export_float_onnx(model: nn.Module, example_inputs, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """fp32 reference export of a (float) model, same exporter settings, checker and atomic write."""
    module = copy.deepcopy(model).eval()
    ir_model = torch_to_onnx_ir(module, example_inputs, opset)
    ClearMetadataAndDocStringPass()(ir_model)  # as in export_pipeline, so file sizes compare fairly
    proto = ir.serde.serialize_model(ir_model)
    check_onnx(proto)
    write_atomically(proto, path)
    return Path(path)
