"""The ``codec`` artifact kind: a learned image codec (encoder + decoder graphs and CDF tables) that
compresses an image to a ``.qc`` file and back, with no torch.

One concept per module: :mod:`.spec` (what a bundle declares, checked), :mod:`.entropy` (range coding
with the tables), :mod:`.bitstream` (the file format), :mod:`.session` (compress/decompress),
:mod:`.images` (image files), :mod:`.metrics` (PSNR, MS-SSIM), :mod:`.bdrate` (Bjøntegaard),
:mod:`.evaluate` (rate–distortion of codecs and JPEG), :mod:`.plot`, :mod:`.shipped` (the codecs
that come with the package). ``qcompile.runtime.load("x.qcodec")`` returns a :class:`CodecSession`.
"""

from __future__ import annotations

_LAZY = {"CodecSession": "qcompile.runtime.codec.session", "open_codec": "qcompile.runtime.codec.shipped"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qcompile.runtime.codec' has no attribute {name!r}")
