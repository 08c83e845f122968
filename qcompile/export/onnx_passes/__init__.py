"""ONNX-side passes of the export, on ``onnx_ir`` (one in-place pass per module).

    ClearMetadataAndDocStringPass → LowerDecodeWeight → LowerBlockLinear → (the method's ONNX passes)
      → FoldBiasAdd
      → RemoveUnusedNodesPass → DropUnusedOpsetImports → SetIRVersion → AttachMetadata
      → DropDefaultAttributes → CompactModel → LowerDither

The first and ``RemoveUnusedNodesPass`` are onnx_ir's own. Clearing node metadata drops the
exporter's per-node stack traces and FX dumps: they were most of a small model's file and leak
local source paths. The last two shrink the file to little more than its tensors:
``DropDefaultAttributes`` deletes attributes that restate ONNX defaults, and ``CompactModel``
drops intermediate types (the passes before it read them), merges equal small constants and
shortens names. ``LowerDither`` comes after it, so the names of the tensors the runtime regenerates
(a seeded dither's, looked up by node id) are never shortened. A method's own passes (``extra``) see the lowered graph with its types and names,
and what they add is cleaned, versioned and compacted like the rest.
``export_pipeline(metadata, extra)`` returns the passes in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx_ir as ir
from onnx_ir.passes.common import ClearMetadataAndDocStringPass, RemoveUnusedNodesPass

from qcompile.export.onnx_passes.attach_metadata import AttachMetadata
from qcompile.export.onnx_passes.compact import CompactModel
from qcompile.export.onnx_passes.drop_default_attributes import DropDefaultAttributes
from qcompile.export.onnx_passes.drop_unused_opsets import DropUnusedOpsetImports
from qcompile.export.onnx_passes.fold_bias_add import FoldBiasAdd
from qcompile.export.onnx_passes.lower_block_linear import LowerBlockLinear
from qcompile.export.onnx_passes.lower_decode_weight import LowerDecodeWeight
from qcompile.export.onnx_passes.lower_dither import LowerDither
from qcompile.export.onnx_passes.set_ir_version import SetIRVersion


def export_pipeline(metadata: Mapping[str, str], extra: Sequence[ir.passes.PassBase] = ()) -> list[ir.passes.PassBase]:
    return [ClearMetadataAndDocStringPass(), LowerDecodeWeight(), LowerBlockLinear(), *extra, FoldBiasAdd(),
            RemoveUnusedNodesPass(),
            DropUnusedOpsetImports(), SetIRVersion(), AttachMetadata(metadata), DropDefaultAttributes(), CompactModel(),
            LowerDither()]


__all__ = ["AttachMetadata", "CompactModel", "DropDefaultAttributes", "DropUnusedOpsetImports", "FoldBiasAdd",
           "LowerBlockLinear", "LowerDecodeWeight", "LowerDither", "SetIRVersion", "export_pipeline"]
