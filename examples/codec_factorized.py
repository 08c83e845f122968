"""The reference factorized-prior codec as a user model file: ``qcompile codec train
examples/codec_factorized.py:build``. A codec of your own is any ``nn.Module`` with one
``qcompile.codec.Bottleneck(M)`` between its analysis and synthesis transforms; this one is
``qcompile.codec.reference`` (the default MODEL of ``qcompile codec train``).
"""

from qcompile.codec.reference import FactorizedCodec, build

__all__ = ["FactorizedCodec", "build"]
