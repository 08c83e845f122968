"""How the runtime builds onnxruntime sessions: providers, session options, threads and spinning.

Every graph of every artifact kind goes through :class:`Engine`, so exactness settings (no
``ConvMulFusion``, DequantizeLinear folded at load) and the thread policy hold for a classifier's one
graph and for each graph of a bundle alike.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from qcompile.runtime.errors import ArtifactError, ProviderError, UncheckedWarning

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA}  # short names accepted by the CLI's --providers
# platform.machine() of the CPUs whose integer kernels an ort-int8 file was checked against (MLAS on x86;
# ARM's QLinearAdd requantizes in fixed point, which qcompile.integer does not model)
X86_MACHINES = ("x86_64", "amd64", "x64", "x86", "i386", "i486", "i586", "i686")


def is_x86(machine: str | None = None) -> bool:
    """Is ``machine`` (default: this one, ``platform.machine()``) an x86 / x86-64 CPU?"""
    return (platform.machine() if machine is None else machine).lower() in X86_MACHINES

# Graph rewrites that would break bit-exactness with PyTorch. A quantized conv computes
# Conv(x_ints, w_ints) -> Mul(output_scale): integer sums that float32 holds exactly in any order.
# Once DequantizeLinear is constant-folded, ConvMulFusion multiplies the scale into the weights, so
# the conv sums non-integers and rounds differently; the next activation quantizer can then flip a
# code (seen: 2 of 16 seeds x 2048 inputs, output error ~3e-3). Keeping the Mul costs ~20% latency
# on activation-quantized convs and nothing on weight-only models (they have no Mul after the conv).
EXACTNESS_DISABLED_OPTIMIZERS = ("ConvMulFusion",)

# ORT's intra-op worker threads busy-wait for work between kernels unless told not to. Measured on the
# example CNN exports, 2-core machine shared with other jobs (docs/BENCHMARKS.md §5, benchmarks/spinning.py):
# spinning off took 0.77-0.83x the time at batch 64 (idle and with a core kept busy) and 1.00-1.10x at
# batch 1 (0.02-0.05 ms). Off by default; Session(..., spinning=True) where cores are otherwise idle.
DEFAULT_SPINNING = False


def resolve_providers(providers: str | Sequence[str] = "auto") -> list[str]:
    """``"auto"``: CUDA then CPU when CUDA is available, else CPU (an ``ort-int8`` graph runs on the CPU
    whatever this says: :meth:`Engine.providers_for`). Otherwise the names given (full provider names, or
    ``"cpu"``/``"cuda"``), checked."""
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


def session_options(intra_op_threads: int | None = None, spinning: bool = DEFAULT_SPINNING,
                    integer_kernels: bool = False) -> ort.SessionOptions:
    """The options every runtime session uses (exposed so tests can inspect the optimised graph).

    ``integer_kernels`` (an ``ort-int8`` artifact): keep ORT's QDQ fusions on, so DQ → Conv → Q runs as
    QLinearConv etc.; the exact target switches them off (below)."""
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
    if not integer_kernels:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if intra_op_threads is not None:
        if not isinstance(intra_op_threads, int) or isinstance(intra_op_threads, bool) or intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be a positive int or None, got {intra_op_threads!r}")
        options.intra_op_num_threads = intra_op_threads
    if not isinstance(spinning, bool):
        raise ValueError(f"spinning must be True or False, got {spinning!r}")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


@dataclass(frozen=True)
class Engine:
    """Settings for every onnxruntime session of one artifact. ``optimize=False`` is for inspection only."""

    providers: tuple[str, ...]
    intra_op_threads: int | None = None
    spinning: bool = DEFAULT_SPINNING
    optimize: bool = True
    auto: bool = False  # the providers were chosen ("auto"), not named: an ort-int8 graph then runs on the CPU

    @classmethod
    def create(cls, providers: str | Sequence[str] = "auto", intra_op_threads: int | None = None,
               spinning: bool | None = None) -> Engine:
        """Resolve the providers and check the options now, before any file is read.

        ``spinning=None`` takes :data:`DEFAULT_SPINNING`.
        """
        spinning = DEFAULT_SPINNING if spinning is None else spinning
        session_options(intra_op_threads, spinning)
        return cls(tuple(resolve_providers(providers)), intra_op_threads, spinning,
                   auto=isinstance(providers, str) and providers == "auto")

    @classmethod
    def inspection(cls) -> Engine:
        """CPU, no graph optimisation: the cheapest session that still reports inputs and outputs."""
        return cls((CPU,), optimize=False)

    def providers_for(self, integer_kernels: bool, source: str = "the model") -> tuple[str, ...]:
        """The providers a graph runs on: the engine's, except that an ``ort-int8`` graph (``integer_kernels``)
        runs on the CPU under "auto" (onnxruntime has no CUDA QLinearConv, and its parity with PyTorch was
        checked on x86 CPUs only). An explicit CUDA request for one, or any run on a CPU that is not x86,
        gets an :class:`UncheckedWarning`: it runs, with parity unverified."""
        if not integer_kernels:
            return self.providers
        if not is_x86():
            warnings.warn(UncheckedWarning(
                f"{source} is an ort-int8 file and this CPU is {platform.machine()}: its parity with PyTorch was "
                "checked on x86 CPUs only (onnxruntime's ARM QLinearAdd rounds in fixed-point arithmetic)",
                hint="compare its outputs with PyTorch here before relying on them, or compile with --target exact "
                     "for bit-exact outputs on any CPU"), stacklevel=4)
        if self.auto:
            return (CPU,)
        if CUDA in self.providers:
            warnings.warn(UncheckedWarning(
                f"{source} is an ort-int8 file, run here on the CUDA provider: its parity with PyTorch is unverified "
                "there (onnxruntime has no CUDA QLinearConv; its integer ops may fall back or round differently)",
                hint="run it on the CPU (providers='auto' or 'cpu'), or compile with --target exact for GPUs"),
                stacklevel=4)
        return self.providers

    def session(self, model: Path | bytes, source: str, external: Mapping[str, np.ndarray] | None = None,
                integer_kernels: bool = False) -> ort.InferenceSession:
        """An ``ort.InferenceSession`` of ``model`` (a path, or the bytes of a graph in a bundle).

        ``external``: values of the graph's external initializers, by name (the regenerated dither of
        :mod:`qcompile.runtime.dithered`). onnxruntime's failures (its own pybind exception types) become
        :class:`ArtifactError` naming ``source``. ``integer_kernels``: see :func:`session_options`.
        """
        options = session_options(self.intra_op_threads, self.spinning, integer_kernels)
        providers = self.providers_for(integer_kernels, source)
        if not self.optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        values = {name: np.ascontiguousarray(a) for name, a in (external or {}).items()}
        if values:
            options.add_external_initializers(
                list(values), [ort.OrtValue.ortvalue_from_numpy(a) for a in values.values()])
        try:
            session = ort.InferenceSession(str(model) if isinstance(model, Path) else model, options,
                                           providers=list(providers),
                                           disabled_optimizers=list(EXACTNESS_DISABLED_OPTIMIZERS))
            session.qcompile_external = values  # the OrtValues borrow these arrays: keep them alive
            return session
        except Exception as e:
            raise ArtifactError(
                f"onnxruntime cannot load {source}: {e}",
                hint="check that the file is a complete ONNX model (e.g. not truncated, not a PyTorch checkpoint)",
            ) from None
