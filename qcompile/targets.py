"""Choosing the export target: ``exact`` or ``ort-int8``, and saying why.

``exact`` computes the integer-domain arithmetic in float ops, bit-exact with PyTorch in any runtime;
``ort-int8`` runs onnxruntime's 8-bit integer kernels (QLinearConv, QGemm, ...; :mod:`qcompile.integer`),
bit-exact with PyTorch on x86 CPUs and about twice as fast there. ``auto`` (the default of ``compile``)
picks ``ort-int8`` when the model has integer kernels and this machine is x86, else ``exact``.

Rules, in the order they are checked (the first that fails is the reason a model stays ``exact``):

1. the method is ``ste`` (the other methods train quantizers the integer kernels do not compute);
2. activations are quantized (a weights-only model has no activation quantizers to run in 8 bits);
3. activations are 8-bit (QLinearConv/QGemm take 8-bit inputs);
4. the weight quantizer is ``uniform`` (symmetric, zero point 0: codes are the kernels' integers);
5. every weight width, per-layer ``--layer-bits`` overrides included, is 2..8 bits (widened to int8 at load);
6. under ``auto`` only: the CPU is x86 (the arithmetic was checked against MLAS's x86 kernels).

Rules 1-5 are also what an explicit ``--target ort-int8`` must satisfy (:meth:`QuantSpec.validate` raises
the obstacle as a :class:`ConfigError`); rule 6 is a warning at load instead (:mod:`qcompile.runtime.engine`).
Under ``auto``, a graph the integer-kernel pass cannot handle falls back to ``exact`` with the pass's
error as the reason (:func:`build_for_target`); asked for explicitly, the error stands.

The plan stores the resolved target (never ``auto``), so a run directory reloads what was compiled.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

from qcompile.errors import IntegerKernelError
from qcompile.runtime.engine import is_x86
from qcompile.runtime.widen import EXACT, ORT_INT8

if TYPE_CHECKING:
    from qcompile.plan import QuantSpec

AUTO = "auto"
TARGETS = (EXACT, ORT_INT8)  # what a plan, a run directory and an artifact record
CHOICES = (AUTO, *TARGETS)  # what compile accepts
_HINT = "or --target exact"
T = TypeVar("T")


@dataclass(frozen=True)
class Obstacle:
    """Why a spec has no integer kernels: ``reason`` for ``auto``'s summary, ``message``/``hint`` for the
    error an explicit ``--target ort-int8`` raises."""

    reason: str
    message: str
    hint: str


def integer_kernel_obstacle(spec: QuantSpec) -> Obstacle | None:
    """The first of rules 1-5 (module docstring) that ``spec`` fails; None when it has integer kernels."""
    if spec.method != "ste":
        return Obstacle(f"--method {spec.method} has no integer kernels; ort-int8 needs --method ste",
                        f"--target ort-int8 is implemented for --method ste, got --method {spec.method}",
                        f"use --method ste with --target ort-int8, {_HINT}")
    if spec.a_bits != 8:
        reason = ("weights-only model: no activation quantizers" if spec.a_bits is None
                  else f"activations are {spec.a_bits}-bit; ort-int8 needs --a-bits 8")
        return Obstacle(reason,
                        f"--target ort-int8 runs 8-bit activations on integer kernels, got --a-bits {spec.a_bits}",
                        f"use --a-bits 8 with --target ort-int8, {_HINT} for other widths")
    low = sorted(p for p, b in spec.overrides.items() if 0 < b < 2)
    if spec.quantizer != "uniform":
        reason = f"--quantizer {spec.quantizer} weights; ort-int8 needs symmetric uniform ones"
    elif not 2 <= spec.w_bits <= 8:
        reason = f"{spec.w_bits}-bit weights; ort-int8 needs 2..8 bits"
    elif low:
        reason = f"--layer-bits {low[0]}={spec.overrides[low[0]]}; ort-int8 needs 2..8-bit weights"
    else:
        return None
    given = f"--quantizer {spec.quantizer} --w-bits {spec.w_bits}" + (f" --layer-bits {low[0]}=1" if low else "")
    return Obstacle(reason, f"--target ort-int8 needs symmetric uniform weights of 2..8 bits, got {given}",
                    f"use --quantizer uniform --w-bits 2..8 with --target ort-int8, {_HINT}")


def resolve_target(spec: QuantSpec, machine: str | None = None) -> tuple[str, str]:
    """``(target, reason)`` for ``spec.target``: ``exact`` or ``ort-int8`` as given, or what ``auto`` picks
    on ``machine`` (default: this one, ``platform.machine()``)."""
    if spec.target != AUTO:
        return spec.target, f"requested (--target {spec.target})"
    obstacle = integer_kernel_obstacle(spec)
    if obstacle is not None:
        return EXACT, f"auto: {obstacle.reason} → {EXACT}"
    machine = platform.machine() if machine is None else machine
    if not is_x86(machine):
        return EXACT, (f"auto: {machine} CPU: ort-int8 parity is verified on x86 only (ARM QLinearAdd uses "
                       f"fixed-point arithmetic) → {EXACT}")
    widths = sorted({spec.w_bits, *(b for b in spec.overrides.values() if b)})
    return ORT_INT8, f"auto: STE uniform W{'/'.join(map(str, widths))}A8 on x86-64 → {ORT_INT8}"


def build_for_target(spec: QuantSpec, build: Callable[[QuantSpec], T],
                     machine: str | None = None) -> tuple[T, str]:
    """``build`` (trace, plan, quantize passes) for the resolved target (``spec`` with ``target`` replaced);
    returns what it built and the reason. Under ``auto``, an ``ort-int8`` build the integer-kernel pass
    refuses (:class:`IntegerKernelError`: a graph it cannot lower) is built again as ``exact``, the refusal
    becoming the reason. Any other error (a bad option, say) is raised at once: an ``exact`` build would
    only repeat it."""
    target, reason = resolve_target(spec, machine)
    try:
        return build(replace(spec, target=target)), reason
    except IntegerKernelError as exc:
        if spec.target != AUTO or target == EXACT:
            raise
        return build(replace(spec, target=EXACT)), f"auto: ort-int8 failed on this graph ({exc.message}) → {EXACT}"


def target_fields(plan) -> dict[str, str]:
    """What summaries, ``--json`` and ``inspect`` report: ``target`` and ``target_reason``."""
    return {"target": plan.spec.target, "target_reason": plan.target_reason}
