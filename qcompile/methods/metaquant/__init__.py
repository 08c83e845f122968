"""MetaQuant (Chen, Wang & Pan, "MetaQuant: Learning to Quantize by Learning to Penetrate
Non-differentiable Quantization", NeurIPS 2019): a meta-network learns the gradient through the
quantizer. "The reference code" below is the authors' (github.com/csyhhu/MetaQuant); how this
implementation compares with both, measured: docs/BENCHMARKS.md, section MetaQuant.

The plug-in has three parts, each in its own module:

- :mod:`.meta_quantizer` — every selected Conv/Linear's DoReFa/BWN quantizer is wrapped so the
  training step can substitute the meta weight for W (no change to the user's model); export
  unwraps it, leaving plain packed codes;
- :mod:`.meta_nets` — the shared coordinate-wise M_φ (FC-Grad, MultiFC, LSTMFC), run in chunks
  by :mod:`.chunking` so its activations stay bounded;
- :mod:`.step` — the training iteration (with :mod:`.refine`, an SGD/Adam whose direction can be
  computed without being applied), the paper's Eq. 6 forward or the reference code's.

Options (``QuantSpec.method_options``) are :class:`MetaQuantOptions`, and their command-line
flags ``CLI_OPTIONS`` (:mod:`.options`, torch-free: ``qcompile --help`` reads them without
importing the rest); their one deviation from the paper (FC biases for MultiFC on BWN, whose
bias-free form freezes every sign) is explained there. The plug-in class is
:class:`.method.MetaQuant`; this package imports its parts on first use.
"""

from __future__ import annotations

import importlib

from qcompile.methods.metaquant.options import CLI_OPTIONS, MetaQuantOptions

_LAZY = {
    "FCGrad": "meta_nets", "LSTMFC": "meta_nets", "MetaNet": "meta_nets", "MultiFC": "meta_nets",
    "build_meta_net": "meta_nets", "MetaContext": "meta_quantizer", "MetaQuantizer": "meta_quantizer",
    "MetaQuant": "method", "RefinedOptimizer": "refine", "MetaQuantStep": "step", "meta_layers": "step",
    "MetaQuantWarning": "step",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CLI_OPTIONS", "MetaQuantOptions", *_LAZY]
