"""A factorized-prior image codec in the spirit of Ballé et al. (2017, 2018): four 5×5 stride-2
convolutions with GDN down to M latent channels (downsampling 16), the mirror image with IGDN up.

``build(N, M)`` is what ``qcompile codec train`` loads by default (``qcompile.codec.reference:build``; it
ships with the package so a wheel install can train without a checkout); the ``Bottleneck(M)`` marker is
where qcompile puts the quantizer and the entropy model. ``examples/codec_factorized.py`` shows the same
model as a user file.
"""

from torch import nn

from qcompile.codec.bottleneck import Bottleneck
from qcompile.codec.layers import GDN


def _down(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class FactorizedCodec(nn.Module):
    """Image [N, 3, H, W] in [0, 1] → reconstruction; H, W multiples of 16."""

    downsample = 16

    def __init__(self, n: int = 40, m: int = 48):
        super().__init__()
        self.analysis = nn.Sequential(_down(3, n), GDN(n), _down(n, n), GDN(n), _down(n, n), GDN(n), _down(n, m))
        self.bottleneck = Bottleneck(m)
        self.synthesis = nn.Sequential(_up(m, n), GDN(n, inverse=True), _up(n, n), GDN(n, inverse=True),
                                       _up(n, n), GDN(n, inverse=True), _up(n, 3))

    def forward(self, x):
        return self.synthesis(self.bottleneck(self.analysis(x)))


def build(n: int = 40, m: int = 48) -> FactorizedCodec:
    return FactorizedCodec(n, m)
