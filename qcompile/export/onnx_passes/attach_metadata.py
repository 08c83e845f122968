"""Pass: write qcompile's facts into the model's ``metadata_props``."""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir


class AttachMetadata(ir.passes.InPlacePass):
    """Set model-level ``metadata_props`` from a str → str mapping.

    Rules:
    1. every key and value must be a ``str`` (JSON is the caller's business): anything else is a
       ``TypeError`` before the model is touched, never a silent ``str()``;
    2. given keys overwrite existing entries; other entries are kept.
    """

    def __init__(self, metadata: Mapping[str, str]):
        super().__init__()
        bad = {k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise TypeError(f"metadata keys and values must be str; offending entries: {bad}")
        self.metadata = dict(metadata)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = {k: v for k, v in self.metadata.items() if model.metadata_props.get(k) != v}
        model.metadata_props.update(changed)
        return ir.passes.PassResult(model, modified=bool(changed))
