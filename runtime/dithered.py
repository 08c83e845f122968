"""Weights stored as packed codes plus a shared-seed dither: the tensors the runtime supplies at load.

A universally quantized weight deploys as Δ(k + u) (uq.md §4.3, "storage-only compression"): the file
holds the packed codes k and, in the manifest, where u comes from — never u itself, never a float weight.
The graph reads u's numerators (2L·u, small integers) from an initializer named by the dither's node id
whose data is *external*, at the location :data:`DITHER_LOCATION`; no such file exists. The runtime
regenerates each tensor with :mod:`qcompile.runtime.dither` from the manifest's record and hands it to
onnxruntime (``SessionOptions.add_external_initializers``), which then folds the decode at load as for
any packed weight. Plain onnxruntime without these values refuses the file (its external data is
missing) instead of running something else.

Manifest field ``"dither"`` (a kind-independent extra field)::

    {"prng": "philox4x32-10", "version": 1,
     "tensors": [{"node": "conv1:weight", "seed": 0, "levels": 64, "shape": [8, 1, 3, 3]}, ...]}

A tensor may name its ``"graph"`` (a bundle's role; default: the single graph ``"model"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from qcompile.runtime.dither import PRNG, PRNG_VERSION, check_levels, check_seed, dither_numerators
from qcompile.runtime.errors import ArtifactError

DITHER_FIELD = "dither"
DITHER_LOCATION = "qcompile-dither"
_REEXPORT = "re-export the model with qcompile (the dither record is damaged)"


def dither_field(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The manifest's ``"dither"`` field for the records of the dithered weights (None when there are none)."""
    tensors = [dict(r) for r in records]
    return {"prng": PRNG, "version": PRNG_VERSION, "tensors": tensors} if tensors else None


def dither_tensors(extra: Mapping[str, Any], role: str, source: str) -> dict[str, np.ndarray]:
    """{initializer name: float32 numerators} the graph ``role`` needs, regenerated from ``extra["dither"]``."""
    field = extra.get(DITHER_FIELD)
    if field is None:
        return {}
    if not isinstance(field, dict) or not isinstance(field.get("tensors"), list):
        raise ArtifactError(f"{source}: the manifest's dither field is not an object with a 'tensors' list",
                            hint=_REEXPORT)
    if field.get("prng") != PRNG or field.get("version") != PRNG_VERSION:
        raise ArtifactError(
            f"{source} was written with dither generator {field.get('prng')!r} version {field.get('version')!r}; "
            f"this runtime has {PRNG!r} version {PRNG_VERSION}",
            hint="install the qcompile-runtime version that wrote the file, or re-export it with this one")
    out = {}
    for record in field["tensors"]:
        if not isinstance(record, dict) or record.get("graph", "model") != role:
            continue
        try:
            node, shape = record["node"], [int(n) for n in record["shape"]]
            if not isinstance(node, str) or any(n < 0 for n in shape):
                raise ValueError("node must be a string and shape non-negative integers")
            numerators, _ = dither_numerators(check_seed(record["seed"]), node, shape, check_levels(record["levels"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: a dither record is malformed ({e}): {record!r}", hint=_REEXPORT) from None
        out[node] = numerators.astype(np.float32)
    return out
