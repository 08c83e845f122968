"""Peak memory of one training step, measured the same way for any step strategy.

What is measured depends on the device, and the number says which (``kind``):

- ``cuda``: ``torch.cuda.max_memory_allocated`` over the step (peak reset at its start) — every
  tensor the caching allocator handed out: parameters, optimizer and meta-net state,
  activations. This is the number to compare MetaQuant and STE by.
- ``cpu-autograd``: the peak, over the step, of the bytes of distinct tensors held by autograd
  for backward (tracked with ``saved_tensors_hooks``; a tensor counts from its first save until
  it is freed; a view counts its own elements, not its whole storage). It covers the model's
  activations and the meta-net's chunk activations but not tensors that autograd never saves (parameters' ``.grad``, optimizer
  state, MetaQuant's per-layer memory — add :func:`tensor_bytes` of those for a total).
  CPU RSS is not used: the allocator's caching makes it too noisy for per-step peaks.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Total bytes of the tensors in a (possibly nested) iterable of tensors/tuples/dicts/None."""
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        elif isinstance(t, dict):
            total += tensor_bytes(t.values())
        elif isinstance(t, (tuple, list)):
            total += tensor_bytes(t)
    return total


class _SavedTensorPeak:
    """Running and peak bytes of storages saved for backward (see the module docstring)."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._live: dict[tuple[int, int], list[int]] = {}  # (ptr, bytes) -> [saving tensors alive, bytes]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        nbytes = t.numel() * t.element_size()
        key = (t.data_ptr(), nbytes)
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [0, nbytes]
            self.current += entry[1]
            self.peak = max(self.peak, self.current)
        entry[0] += 1
        weakref.finalize(t, self._release, key)
        return t

    def _release(self, key: tuple[int, int]) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]

    def __enter__(self) -> _SavedTensorPeak:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


class PeakMemory:
    """``with PeakMemory(device) as m: step()`` then ``m.peak_bytes`` and ``m.kind``."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.kind = "cuda" if self.device.type == "cuda" else "cpu-autograd"
        self.peak_bytes = 0
        self._saved: _SavedTensorPeak | None = None

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._saved = _SavedTensorPeak().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._saved is not None:
            self._saved.__exit__(*exc)
            self.peak_bytes = self._saved.peak
