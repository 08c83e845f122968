"""The ``dynamic`` kind: a bit selector and a multi-width model, dispatched per image (torch-free).

A batch runs in three steps: the ``selector`` graph gives each image one candidate index per dynamic
layer; images are grouped by that configuration; the ``model`` graph runs once per group with the
group's ``widths`` vector. Outputs come back in input order, with the widths chosen per image. What one
image gets never depends on the others in its batch (the selector and each group's run are per image).

Cost per image, from the manifest's ``dynamic`` record: BitOPs = static layers' + selector's
(MACs × 32 × 32) + Σ_l MACs_l · b_l² over the dynamic layers at the chosen widths. onnxruntime on a
CPU computes in dequantized float, so fewer bits are not faster here: BitOPs measure what integer
hardware would do.

Speed: each configuration runs on its own session of the model graph, with the widths baked in as a
constant (:mod:`qcompile.runtime.constant_input`), so onnxruntime folds the weight decode once per
configuration at load instead of on every call. Those sessions are built on first use and kept in an
LRU cache of ``cache_size`` (default :data:`CONFIG_CACHE_SIZE`); the outputs are bitwise those of the
generic graph (a test checks).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np

from qcompile.runtime.artifact import Artifact
from qcompile.runtime.constant_input import with_constant_input
from qcompile.runtime.container import Contents, graph_member
from qcompile.runtime.errors import ArtifactError, InputError
from qcompile.runtime.kinds import register_kind
from qcompile.runtime.session import Session, check_input

DYNAMIC = "dynamic"
FLOAT_BITS = 32
CONFIG_CACHE_SIZE = 32  # specialised sessions kept (each holds its decoded float weights, ~0.4 MB for the MNIST CNN)


class DynamicSession:
    """``predict(x)`` like a classifier's :class:`~qcompile.runtime.Session`; ``last_widths`` holds the
    widths (bits) each image of the latest ``predict``/``run`` got, one column per dynamic layer."""

    def __init__(self, contents: Contents, cache_size: int = CONFIG_CACHE_SIZE):
        if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0: no specialised sessions), got {cache_size!r}")
        info = contents.manifest.extra.get(DYNAMIC) or {}
        try:
            self.candidates = np.asarray(info["candidates"], dtype=np.int64)
            self.layer_names = list(info["layers"])
            self.macs = np.asarray(info["macs"], dtype=np.float64)
            self.selector_macs, self.static_bitops = int(info["selector_macs"]), int(info["static_bitops"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{contents.path}: the manifest's 'dynamic' record is incomplete ({e})",
                                hint="re-export the model with qcompile") from None
        self.spinning = contents.engine.spinning
        self._selector, self._model = contents.session("selector"), contents.session("model")
        manifest = contents.manifest
        art = Artifact.from_session(contents.path, self._selector, dataclasses.replace(manifest, classes=None),
                                    contents.file_size_bytes)
        self.artifact = dataclasses.replace(art, classes=manifest.classes, manifest=manifest, output_width=None,
                                            output_names=tuple(o.name for o in self._model.get_outputs()))
        inputs = [i.name for i in self._model.get_inputs()]
        if len(inputs) != 2 or len(self.macs) != len(self.layer_names):
            raise ArtifactError(f"{contents.path}: the model graph must take (images, widths)",
                                hint="re-export the model with qcompile")
        self._x_name, self._widths_name = inputs
        self._contents, self.cache_size = contents, cache_size
        self._configs: OrderedDict[bytes, Any] = OrderedDict()
        self.last_widths: np.ndarray | None = None

    @property
    def providers(self) -> list[str]:
        return self._model.get_providers()

    def choose(self, x: np.ndarray) -> np.ndarray:
        """Candidate indices (N, L) for normalised images ``x``."""
        return self._selector.run(None, {self.artifact.input_name: x})[0].astype(np.int64, copy=False)

    def specialised(self, config: np.ndarray):
        """The session of the model graph with ``widths`` fixed to ``config`` (built once, LRU-cached)."""
        key = np.ascontiguousarray(config, dtype=np.int64).tobytes()
        session = self._configs.get(key)
        if session is not None:
            self._configs.move_to_end(key)
            return session
        graph = with_constant_input(self._contents.graph_bytes("model"), self._widths_name,
                                    np.frombuffer(key, np.int64))
        session = self._contents.engine.session(graph, f"{self._contents.path}:{graph_member('model')}")
        self._configs[key] = session
        while len(self._configs) > self.cache_size:
            self._configs.popitem(last=False)
        return session

    def run_config(self, x: np.ndarray, config: np.ndarray, specialised: bool = True) -> np.ndarray:
        """The model graph on ``x`` at one configuration (candidate indices): its specialised session, or
        the generic graph fed the widths (``specialised=False``, or a cache size of 0)."""
        if specialised and self.cache_size > 0:
            return self.specialised(config).run(None, {self._x_name: x})[0]
        return self._model.run(None, {self._x_name: x, self._widths_name: np.asarray(config, np.int64)})[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """One batch of normalised images: selector, grouping by configuration, one model run per group."""
        check_input(x, self.artifact.input_shape, self.artifact.input_dtype)
        return self._dispatch(x)

    def _dispatch(self, x: np.ndarray) -> np.ndarray:
        indices = self.choose(x)
        if len(indices) == 1:
            configs, group = indices, np.zeros(1, np.int64)
        else:
            configs, group = np.unique(indices, axis=0, return_inverse=True)
        if len(configs) == 1:
            outputs = self.run_config(x, configs[0])
        else:
            outputs = None
            for g, config in enumerate(configs):
                rows = np.flatnonzero(group.reshape(-1) == g)
                out = self.run_config(x[rows], config)
                if outputs is None:
                    outputs = np.empty((len(x), *out.shape[1:]), out.dtype)
                outputs[rows] = out
        self.last_widths = self.candidates[indices]
        return outputs

    def predict(self, x: np.ndarray, batch_size: int = 64, normalize: bool = False) -> np.ndarray:
        """Outputs for all of ``x`` in input order, ``batch_size`` images per selector call."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_input(x, (None, *self.artifact.input_shape[1:]), self.artifact.input_dtype)
        if len(x) == 0:
            raise InputError("predict got 0 samples", hint="pass at least one sample")
        if normalize:
            x = self.normalize(x)
        if len(x) <= batch_size:  # one call: no copies (batch 1 is where the per-call overhead shows)
            return self._dispatch(x)
        outputs, widths = [], []
        for start in range(0, len(x), batch_size):
            outputs.append(self._dispatch(x[start:start + batch_size]))
            widths.append(self.last_widths)
        self.last_widths = np.concatenate(widths)
        return np.concatenate(outputs)

    normalize = Session.normalize  # (x − mean) / std with the artifact's statistics; it reads only self.artifact

    def bitops(self, widths: np.ndarray) -> np.ndarray:
        """BitOPs per image for widths (N, L) in bits."""
        fixed = self.static_bitops + self.selector_macs * FLOAT_BITS * FLOAT_BITS
        return fixed + (widths.astype(np.float64) ** 2) @ self.macs

    def dispatch_report(self) -> dict[str, Any]:
        """Bits and BitOPs of the latest ``predict``: means, the configurations used and their counts."""
        widths = self.last_widths
        bitops = self.bitops(widths)
        configs, counts = np.unique(widths, axis=0, return_counts=True)
        return {"mean_bits": float(widths.mean()), "bits_per_layer": dict(zip(self.layer_names,
                                                                                widths.mean(axis=0).tolist())),
                "mean_bitops": float(bitops.mean()),
                "selector_bitops": self.selector_macs * FLOAT_BITS * FLOAT_BITS,
                "configurations": {"/".join(map(str, c)): int(n) for c, n in zip(configs.tolist(), counts)}}

    def __repr__(self) -> str:
        return f"DynamicSession({str(self.artifact.path)!r}, layers={self.layer_names})"


register_kind(DYNAMIC, DynamicSession, graphs=("selector", "model"), fields=(DYNAMIC,),
              description="a bit selector and a multi-width model: images -> class scores, widths chosen per image")
