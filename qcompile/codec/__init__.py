"""Learned image codecs: mark an autoencoder's latent, train it for rate + λ·distortion, export a
bundle (encoder, decoder, CDF tables) that the torch-free runtime turns into real bitstreams.

``prepare(model, mode=...)`` traces the model with its :class:`Bottleneck` marker as a leaf and runs
the InsertBottleneck pass; the result returns ``(reconstruction, likelihoods)`` (see
:mod:`qcompile.codec.bottleneck` for the quantization modes).
"""

from __future__ import annotations

from torch import fx, nn

from qcompile.codec.bottleneck import MODES, QUANTIZATIONS, Bottleneck, QuantizedBottleneck
from qcompile.codec.entropy import FactorizedDensity
from qcompile.codec.layers import GDN

__all__ = ["GDN", "MODES", "QUANTIZATIONS", "Bottleneck", "FactorizedDensity", "QuantizedBottleneck",
           "bottleneck_of", "prepare"]


def prepare(model: nn.Module, mode: str = "un", seed: int = 0, levels: int = 16, node: str | None = None,
            channels: int | None = None, eval_quantization: str | None = None) -> fx.GraphModule:
    """Trace ``model`` and insert the quantization node (``mode`` un | uq | uq-sr) at its latent."""
    from qcompile.passes.insert_bottleneck import InsertBottleneck
    from qcompile.passes.trace import trace

    leaves = [name for name, m in model.named_modules() if isinstance(m, (Bottleneck, GDN))]  # GDN: opaque, float
    gm = trace(model, leaf_modules=leaves)
    InsertBottleneck(lambda m: QuantizedBottleneck(m, mode, seed, levels, eval_quantization),
                     node=node, channels=channels)(gm)
    return gm


def bottleneck_of(model: nn.Module) -> QuantizedBottleneck:
    """The quantization node of a prepared codec."""
    for m in model.modules():
        if isinstance(m, QuantizedBottleneck):
            return m
    from qcompile.errors import ConfigError

    raise ConfigError("this model has no codec bottleneck node", hint="prepare it with qcompile.codec.prepare")
