"""Run an exported model: provider choice, input checks, batching and normalisation.

A :class:`Session` holds one ``onnxruntime.InferenceSession`` and nothing mutable besides it.
ORT's ``run`` is safe to call from many threads at once, so one ``Session`` can serve a thread
pool without locks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from qcompile.runtime.artifact import Artifact, Dim, open_inference_session
from qcompile.runtime.errors import ArtifactError, InputError, ProviderError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA}  # short names accepted by the CLI's --providers

# Graph rewrites that would break bit-exactness with PyTorch. A quantized conv computes
# Conv(x_ints, w_ints) -> Mul(output_scale): integer sums that float32 holds exactly in any order.
# Once DequantizeLinear is constant-folded, ConvMulFusion multiplies the scale into the weights, so
# the conv sums non-integers and rounds differently; the next activation quantizer can then flip a
# code (seen: 2 of 16 seeds x 2048 inputs, output error ~3e-3). Keeping the Mul costs ~20% latency
# on activation-quantized convs and nothing on weight-only models (they have no Mul after the conv).
EXACTNESS_DISABLED_OPTIMIZERS = ("ConvMulFusion",)


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """``"auto"``: CUDA then CPU when CUDA is available, else CPU. Otherwise the names given
    (full provider names, or ``"cpu"``/``"cuda"``), checked."""
    available = ort.get_available_providers()
    if providers == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    requested = [providers] if isinstance(providers, str) else list(providers)
    requested = [ALIASES.get(p.lower(), p) for p in requested]
    missing = [p for p in requested if p not in available]
    if not requested or missing:
        raise ProviderError(
            f"execution provider(s) {missing or requested} not available; this onnxruntime has {available}",
            hint="use providers='auto', pick from the available list, or install onnxruntime-gpu for CUDA",
        )
    return requested


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """The options every runtime session uses (exposed so tests can inspect the optimised graph)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # By default ORT's constant folding skips DequantizeLinear (to keep Q/DQ for its quantized kernels),
    # so DQ on our packed constant weights runs on *every* call. Measured on ORT 1.32, CPU, int8/int4/
    # uint4 weights behind DequantizeLinear, via optimized_model_filepath (kept honest by
    # tests/test_runtime.py::test_dequantize_of_constant_weights_is_folded_at_load):
    # * without the entry, in 2-layer MLPs and CNNs every DQ stayed in the optimised graph: 784-512-10
    #   MLP 0.15-0.34 ms at batch 1, a 2-conv CNN 13.5 ms at batch 64. Only a graph with a single
    #   DQ->MatMul got fused into MatMulNBits, which uses accuracy_level=4 (int8 activations): 2.4e-3
    #   relative error against the exact dequantized product;
    # * with it, no DQ is left (weights become float initializers): MLP 0.015 ms, CNN 7.9 ms, and
    #   outputs match the exact product to float rounding (~4e-7 relative).
    # Cost: weights sit in memory as float32 (the file on disk stays packed), and the MatMulNBits path
    # is lost where it applied (it was faster only for large MatMuls, e.g. 4096x4096 at batch 1).
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    if intra_op_threads is not None:
        if not isinstance(intra_op_threads, int) or intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be a positive int or None, got {intra_op_threads!r}")
        options.intra_op_num_threads = intra_op_threads
    return options


class Session:
    """An exported model ready to run. ``run`` takes one batch; ``predict`` any number of samples."""

    def __init__(
        self,
        path: str | Path,
        providers: str | Sequence[str] = "auto",
        intra_op_threads: int | None = None,
    ):
        self._ort = open_inference_session(path, session_options(intra_op_threads), resolve_providers(providers),
                                           EXACTNESS_DISABLED_OPTIMIZERS)
        self.artifact = Artifact.from_session(path, self._ort)

    @property
    def providers(self) -> list[str]:
        """The execution providers ORT actually uses, in priority order."""
        return self._ort.get_providers()

    def run(self, x: np.ndarray) -> np.ndarray:
        """One batch through the model; returns the first output (the logits, for a classifier)."""
        check_input(x, self.artifact.input_shape, self.artifact.input_dtype)
        return self._run(x)

    def predict(self, x: np.ndarray, batch_size: int = 64, normalize: bool = False) -> np.ndarray:
        """Outputs for all of ``x``, run ``batch_size`` samples at a time (or the model's fixed batch).

        ``normalize=True`` first applies the artifact's ``(x - mean) / std``, for raw [0, 1] images.
        """
        shape = self.artifact.input_shape
        check_input(x, (None, *shape[1:]), self.artifact.input_dtype)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) == 0:
            raise InputError("predict got 0 samples", hint="pass at least one sample")
        if normalize:
            x = self.normalize(x)
        step = shape[0] or batch_size  # a model exported with a fixed batch only accepts that batch
        outputs = []
        for start in range(0, len(x), step):
            batch = x[start : start + step]
            n = len(batch)
            if n < step and shape[0]:  # pad the last batch up to the fixed size, drop the padding after
                batch = np.concatenate([batch, np.zeros((step - n, *batch.shape[1:]), batch.dtype)])
            outputs.append(self._run(batch)[:n])
        return np.concatenate(outputs)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` over axis 1 (channels) with the artifact's statistics, as float32."""
        mean, std = self.artifact.mean, self.artifact.std
        if mean is None or std is None:
            raise ArtifactError(
                f"{self.artifact.path} has no mean/std metadata, so normalize=True cannot be applied",
                hint="normalise the inputs yourself and call with normalize=False, or re-export with qcompile",
            )
        bcast = (-1,) + (1,) * (x.ndim - 2)
        out = (x - np.asarray(mean, np.float32).reshape(bcast)) / np.asarray(std, np.float32).reshape(bcast)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        name, output = self.artifact.input_name, self.artifact.output_names[0]
        return self._ort.run([output], {name: x})[0]

    def __repr__(self) -> str:
        return f"Session({str(self.artifact.path)!r}, providers={self.providers})"


def check_input(x: object, shape: tuple[Dim, ...], dtype: str) -> None:
    """Raise :class:`InputError` saying what differs and how to fix it, unless ``x`` fits the input."""
    expected = format_shape(shape)
    if not isinstance(x, np.ndarray):
        raise InputError(
            f"input must be a numpy array, got {type(x).__name__}",
            hint=f"convert it with np.asarray(x, dtype=np.{dtype}) and shape {expected}",
        )
    if x.dtype != np.dtype(dtype):
        scale = " and divide by 255 (uint8 images)" if x.dtype == np.uint8 else ""
        raise InputError(
            f"input dtype is {x.dtype}, the model expects {dtype}",
            hint=f"pass {dtype}: x.astype(np.{dtype}){scale}",
        )
    if x.ndim != len(shape):
        if x.ndim == len(shape) - 1 and _fits(x.shape, shape[1:]):
            hint = "add a batch dimension: x[None] (or np.expand_dims(x, 0))"
        else:
            hint = f"reshape the input to {expected}"
        raise InputError(
            f"input has shape {x.shape} ({x.ndim}-D), the model expects {expected} ({len(shape)}-D)", hint=hint
        )
    if not _fits(x.shape, shape):
        bad = [i for i, (got, want) in enumerate(zip(x.shape, shape)) if want is not None and got != want]
        if len(shape) == 4 and _fits(x.shape[1:], (shape[2], shape[3], shape[1])):
            hint = "the input looks channels-last (NHWC); transpose it: x.transpose(0, 3, 1, 2)"
        elif bad == [0]:
            hint = f"the model was exported with a fixed batch of {shape[0]}; use predict() to batch for you"
        else:
            hint = f"resize/reshape the input to {expected}"
        dims = ", ".join(f"dim {i} is {x.shape[i]} (expected {shape[i]})" for i in bad)
        raise InputError(f"input has shape {x.shape}, the model expects {expected}: {dims}", hint=hint)


def format_shape(shape: tuple[Dim, ...]) -> str:
    """``(batch, 1, 28, 28)``: dynamic dims shown by role instead of ``None``."""
    names = ["batch" if i == 0 and d is None else ("?" if d is None else str(d)) for i, d in enumerate(shape)]
    return f"({', '.join(names)})"


def _fits(got: tuple[int, ...], want: tuple[Dim, ...]) -> bool:
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))
