"""DynaDFQ (Hong, Baik et al., WACV 2025): data-free quantization with per-image bit widths.

Built so far (one concept per module):

- :mod:`.nested` — per-channel weight quantizer at any candidate width, with nested codes (one stored
  code per weight; lower widths are its top bits) and the decoding formula;
- :mod:`.activation` — per-tensor activation quantizer at any candidate width from one frozen range;
- :mod:`.widths` — switch a multi-width model to one configuration (per layer: weight and input width);
- :mod:`.cost` — BitOPs per layer and in total (MACs × weight bits × input bits);
- :mod:`.options`, :mod:`.method`, :mod:`.pool_data`, :mod:`.step` — the plug-in, static widths on a
  synthetic pool with the float BatchNorm statistics kept;
- :mod:`.selector`, :mod:`.insert_selector` — the per-image bit selector and the pass that adds it;
- :mod:`.regulariser`, :mod:`.dynamic_step` — BitOPs per image and the joint training step;
- :mod:`.width_inputs`, :mod:`.export` — the ``dynamic`` bundle (the runtime side is
  :mod:`qcompile.runtime.dynamic`).

The synthetic data it trains on is :mod:`qcompile.synthesis` (``qcompile synthesize``). Parts are
imported on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {"NestedWeightQuantizer": "nested", "candidate_widths": "nested", "truncate_codes": "nested",
         "MultiBitActivationQuantizer": "activation", "LayerCost": "cost", "bitops": "cost",
         "layer_costs": "cost", "set_widths": "widths", "current_widths": "widths",
         "multi_width_layers": "widths", "BitSelector": "selector", "DynamicOp": "selector",
         "InsertBitSelector": "insert_selector", "FixWidths": "insert_selector", "image_bitops": "regulariser"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
