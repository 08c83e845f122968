"""Export a quantized GraphModule to standard ONNX with packed low-bit weights.

    deepcopy → FreezeForExport → torch.onnx.export(dynamo) → onnx_passes → checker → atomic write

The file holds INT4/INT2/... initializers feeding DequantizeLinear, activation quantization as
Div → Round → Clip(qmin, qmax), and qcompile's ``metadata_props``. Nothing is written unless
every step, the full ONNX checker included, succeeds: the model goes to a temporary file in the
target folder and is moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
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
from qcompile.export.onnx_passes import export_pipeline
from qcompile.passes.freeze_for_export import FreezeForExport
from qcompile.version import __version__

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


def _as_tuple(example_inputs) -> tuple[torch.Tensor, ...]:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def _with_batch_of_two(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """torch.export specialises a batch of 1 to a constant; a batch of 2 keeps the dim symbolic."""
    return tuple(x if x.shape[0] >= 2 else x.expand(2, *x.shape[1:]).contiguous() for x in inputs)


@contextlib.contextmanager
def _quiet():
    """Swallow the exporter's prints, warnings and log lines; they are replayed in a failure's message."""
    buffer = io.StringIO()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        logger.setLevel(level)


def torch_to_onnx_ir(module: nn.Module, example_inputs, opset: int) -> ir.Model:
    """``torch.onnx.export(dynamo=True)`` with a dynamic batch dimension, silenced; an ``onnx_ir`` model."""
    inputs = _with_batch_of_two(_as_tuple(example_inputs))
    batch = torch.export.Dim("batch")
    with _quiet() as log:
        try:
            program = torch.onnx.export(module, inputs, dynamo=True, verbose=False, opset_version=opset,
                                        dynamic_shapes=tuple({0: batch} for _ in inputs))
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed: {e}\n{log.getvalue()[-4000:]}",
                              hint="check that the model runs in eval mode on the example inputs") from e
    return program.model


def write_atomically(proto: onnx.ModelProto, path: str | Path) -> int:
    """Write ``proto`` to ``path`` through a temporary file in the same folder; return its size."""
    return atomic_write(path, lambda f: f.write(proto.SerializeToString()))


def _check(proto: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported model fails the ONNX checker: {e}",
                          hint="this is a qcompile bug; please report it with the model") from e


def _opset(layers: list[dict], requested: int | None) -> int:
    needed = INT2_OPSET if any(layer["weight_format"].endswith("int2") for layer in layers) else DEFAULT_OPSET
    if requested is None:
        return needed
    if requested < needed:
        raise ExportError(f"opset {requested} cannot hold these weights; they need opset >= {needed}",
                          hint=f"pass opset={needed} or higher (INT4 needs 21, INT2 needs 25), or leave it unset")
    return requested


def export_onnx(gm: fx.GraphModule, example_inputs, path: str | Path, metadata: dict[str, str],
                opset: int | None = None, onnx_passes: Sequence[ir.passes.PassBase] = ()) -> ExportReport:
    """Export a stripped, BN-folded quantized GraphModule to ``path``; ``gm`` itself is not modified.

    ``metadata`` is written to ``metadata_props`` as given (str → str). ``qcompile.version`` and
    ``qcompile.layers`` are filled in from this export when the caller leaves them out. ``opset``
    defaults to 21, or 25 when a layer has 2-bit weights. ``onnx_passes`` (a method's) join the
    ONNX pipeline (see :func:`~qcompile.export.onnx_passes.export_pipeline`).
    """
    frozen = copy.deepcopy(gm).eval()
    freeze = FreezeForExport()
    freeze(frozen)
    layers = freeze.report["layers"]
    opset = _opset(layers, opset)
    metadata = {"qcompile.version": __version__, "qcompile.layers": json.dumps(layers), **metadata}
    model = torch_to_onnx_ir(frozen, example_inputs, opset)
    passes = export_pipeline(metadata, onnx_passes)
    changed = []
    for p in passes:
        try:
            if p(model).modified:
                changed.append(type(p).__name__)
        except ir.passes.PassError as e:
            raise ExportError(f"ONNX pass {type(p).__name__} failed: {e}", hint="this is a qcompile bug") from e
    proto = ir.serde.serialize_model(model)
    _check(proto)
    size = write_atomically(proto, path)
    return ExportReport(Path(path), opset, proto.ir_version, size, layers, changed)


def export_float_onnx(model: nn.Module, example_inputs, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """fp32 reference export of a (float) model, same exporter settings, checker and atomic write."""
    module = copy.deepcopy(model).eval()
    ir_model = torch_to_onnx_ir(module, example_inputs, opset)
    ClearMetadataAndDocStringPass()(ir_model)  # as in export_pipeline, so file sizes compare fairly
    proto = ir.serde.serialize_model(ir_model)
    _check(proto)
    write_atomically(proto, path)
    return Path(path)
