"""Universal quantization (Agustsson & Theis, "Universally Quantized Neural Compression", NeurIPS 2020)
for the weights and activations of an ordinary model.

One concept per module:

- :mod:`.ops` — the numerical core on torch tensors: soft rounding s_α, its inverse, the conditional
  mean r_α, uniform noise, the expected-gradient trick, universal quantize/dequantize;
- :mod:`.dither` — the shared-seed offsets u on torch tensors, bit for bit the torch-free runtime's
  (:mod:`qcompile.runtime.dither`, which defines the algorithm);
- :mod:`.options` — the plug-in's settings and command-line flags (torch-free);
- :mod:`.quantizers` — the UQ nodes: weight and activation quantizers with the UN/UQ/SR channels;
- :mod:`.schedule` — the α schedule and the training step that applies it;
- :mod:`.method` — the ``universal`` plug-in (registered by name).

This package imports its parts on first use, so reading its command-line options does not import torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ALPHA_EPS": "ops", "ALPHA_HARD": "ops", "add_uniform_noise": "ops", "clip_to_grid": "ops",
    "perturb_and_apply": "ops", "soft_round": "ops", "soft_round_conditional_mean": "ops",
    "soft_round_inverse": "ops", "uniform_noise": "ops", "universal_dequantize": "ops", "universal_quantize": "ops",
    "dither_numerators": "dither", "dither_offsets": "dither", "node_id": "dither",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
