"""The code flip rate of an epoch, and the guard that warns when codes freeze while the loss is high.

QAT moves float weights, but only a code change moves the quantized model. A run whose codes stop
changing while its loss is high is stuck, whatever its float weights do; the loss curve alone does
not say so, since BatchNorm and biases keep training. (A learned gradient proportional to a BWN
weight changed none of a network's 19,464 signs in 750 SGD steps while its loss crept down:
docs/BENCHMARKS.md, "Code flip rate".)

Definition: :func:`code_snapshot` takes the integer codes of every quantized weight — exactly what
export stores (``weight_quantizer.codes(weight)``) — at the start of an epoch and again at its end;
``code_flip_rate`` = (codes that differ) / (all codes), over every weight-quantized layer. For 1-bit
weights a flip is a sign change. It is the net change over the epoch: a code that flips and flips
back within it is not counted. Cost: quantizing each weight twice per epoch, and one int16 copy of
the codes (kept in the checkpoint, so a resumed epoch still compares with its true start).

Guard (:func:`frozen_codes_warning`, a :class:`FrozenCodesWarning`): an epoch is flagged when ``code_flip_rate`` < ``FROZEN_FLIP_RATE``
(fewer than 1 code in 10,000 changed) while its train loss is at least ``HIGH_LOSS_FRACTION`` of the
first epoch's (the loss has not even halved since training began). The loss is compared with the
run's own first epoch because what counts as a high loss depends on the task. Both thresholds and
what the benchmark runs measured are in docs/BENCHMARKS.md ("Code flip rate").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qcompile.errors import QCompileWarning
from qcompile.quantized_ops import QuantizedOp

FROZEN_FLIP_RATE = 1e-4
HIGH_LOSS_FRACTION = 0.5
Cause = tuple[str, str]  # (the likely cause, how to fix it)
GENERIC_CAUSE: Cause = (
    "the updates no longer move any weight across a code boundary: a learning rate too small for the quantizer's "
    "step, or a gradient that vanishes or is scaled down (e.g. by BWN's α)",
    "raise the learning rate, or check the method's gradient")


class FrozenCodesWarning(QCompileWarning):
    """Weight codes stopped changing while the train loss is still high (see the module docstring)."""


Snapshot = dict[str, torch.Tensor]


def code_snapshot(model: nn.Module) -> Snapshot:
    """Integer codes (int16, on the CPU) of every quantized weight, by module name; empty when none."""
    snapshot = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantizedOp) and m.weight_quantizer is not None:
            snapshot[name] = m.weight_quantizer.codes(m.weight.detach()).codes.to(torch.int16).cpu()
    return snapshot


def code_flip_rate(before: Snapshot, after: Snapshot) -> float | None:
    """Fraction of codes that differ between two snapshots of the same model (None without codes)."""
    if sorted(before) != sorted(after):
        raise ValueError(f"snapshots of different layers: {sorted(before)} vs {sorted(after)}")
    total = sum(codes.numel() for codes in before.values())
    if total == 0:
        return None
    changed = sum(int(torch.count_nonzero(before[name] != after[name])) for name in before)
    return changed / total


def annotate_epoch(record: dict[str, Any], start: Snapshot | None, model: nn.Module,
                   history: list[dict[str, Any]], cause: Cause | None) -> FrozenCodesWarning | None:
    """Add the epoch's ``code_flip_rate`` (codes now vs ``start``) to ``record`` and, when the guard
    fires, its ``warning`` (the text of the returned warning). Nothing is added for a model without
    quantized weights. ``history`` holds the run's earlier epoch records (the first is the loss reference)."""
    rate = code_flip_rate(start, code_snapshot(model)) if start is not None else None
    if rate is None:
        return None
    record["code_flip_rate"] = rate
    warning = frozen_codes_warning(record, history[0] if history else record, cause)
    if warning is not None:
        record["warning"] = str(warning)
    return warning


def frozen_codes_warning(record: dict[str, Any], first: dict[str, Any], cause: Cause | None) -> FrozenCodesWarning | None:
    """The guard's warning for an epoch ``record`` ({code_flip_rate, train_loss, epoch}), or None.

    ``first`` is the run's first epoch record; ``cause`` the step strategy's diagnosis, if it has one.
    """
    rate, loss, reference = record.get("code_flip_rate"), record.get("train_loss"), first.get("train_loss")
    if rate is None or loss is None or reference is None or rate >= FROZEN_FLIP_RATE:
        return None
    if loss < HIGH_LOSS_FRACTION * reference:
        return None
    text, fix = cause or GENERIC_CAUSE
    return FrozenCodesWarning(
        f"weight codes frozen: {100 * rate:.3g}% of them changed in epoch {record['epoch'] + 1} "
        f"(threshold {100 * FROZEN_FLIP_RATE:.3g}%) while the train loss {loss:.4g} is still "
        f"{100 * loss / reference:.0f}% of the first epoch's {reference:.4g}. Likely cause: {text}", hint=fix)
