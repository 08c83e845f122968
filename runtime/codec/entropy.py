"""Entropy coding of integer latents with the bundle's CDF tables, by constriction's range coder.

Why constriction: a maintained, tested range/ANS implementation (Rust, exactly invertible fixed-point
models) instead of a hand-written arithmetic coder, whose off-by-one bugs would show up as corrupt
images months later.

Layout of the coded stream (one range coder, first in first out): the elements are visited table by
table (t = 0 … T−1), in row-major order within a table; each group is its symbols under table t's
categorical model, followed by the escape codes of the group's overflow symbols. The decoder knows
every element's table from the latent shape (and, in universal mode, the dither), so it knows each
group's size without it being stored.

Escape code of a value k outside table t's range [o, o + S): the excess z ≥ 0 zig-zagged with its side
(z = 2(o − 1 − k) below, 2(k − o − S) + 1 above), then Elias-gamma-like: n = bit length of z + 1
under a uniform model over [1, 40], and the n − 1 bits below its leading one in 16-bit uniform
chunks. Nothing is clamped: any |k| < 2^31 round-trips.
"""

from __future__ import annotations

import numpy as np

from qcompile.runtime.codec.spec import CodecSpec
from qcompile.runtime.errors import ArtifactError, OutputError

MAX_ABS = 1 << 31  # integer latents beyond this are not a codec's output (the encoder diverged)
_LENGTH_SYMBOLS = 40  # bit lengths 1..40 of z + 1 (z < 2^33 for |k| < 2^31)
_CHUNK = 16


def _constriction():
    import constriction  # a hard dependency of qcompile-runtime, imported on first use (it loads a native module)

    return constriction


class EntropyCoder:
    """Encode/decode integer latents k (one image) with per-element table indices."""

    def __init__(self, spec: CodecSpec):
        self.spec = spec
        self._models: dict[int, object] = {}
        self._symbols = spec.cdf_length - 2  # regular symbols per table; symbol S_t is the overflow

    def _model(self, t: int):
        if t not in self._models:
            cs = _constriction()
            n = int(self.spec.cdf_length[t])
            pmf = np.diff(self.spec.cdf[t, :n]).astype(np.float64) / float(1 << self.spec.precision)
            self._models[t] = cs.stream.model.Categorical(pmf, perfect=False)
        return self._models[t]

    @staticmethod
    def _groups(table: np.ndarray) -> list[tuple[int, np.ndarray]]:
        order = np.argsort(table, kind="stable")
        sorted_tables = table[order]
        starts = np.flatnonzero(np.r_[True, sorted_tables[1:] != sorted_tables[:-1]]) if table.size else []
        ends = list(starts[1:]) + [table.size]
        return [(int(sorted_tables[s]), order[s:e]) for s, e in zip(starts, ends)]

    def encode(self, k: np.ndarray, table: np.ndarray) -> bytes:
        """The payload (little-endian 32-bit words) for flat int64 ``k`` with flat table indices ``table``."""
        if k.size and int(np.abs(k).max()) >= MAX_ABS:
            raise OutputError(f"the encoder produced a latent of magnitude {int(np.abs(k).max())} (>= 2^31)",
                              hint="the codec's encoder diverged on this image; check the input is an 8-bit RGB "
                                   "image and the model is a trained codec")
        cs = _constriction()
        coder = cs.stream.queue.RangeEncoder()
        for t, idx in self._groups(table):
            s = int(self._symbols[t])
            v = k[idx] - int(self.spec.cdf_offset[t])
            inside = (v >= 0) & (v < s)
            coder.encode(np.where(inside, v, s).astype(np.int32), self._model(t))
            for value in v[~inside]:
                _encode_escape(coder, cs, int(value), s)
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, table: np.ndarray, source: str) -> np.ndarray:
        """Flat int64 k back from ``payload``; :class:`ArtifactError` if the stream does not decode exactly."""
        cs = _constriction()
        if len(payload) % 4:
            raise ArtifactError(f"{source}: the payload is {len(payload)} bytes, not whole 32-bit words",
                                hint="the file is truncated or corrupt; compress the image again")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        k = np.empty(table.size, dtype=np.int64)
        try:
            decoder = cs.stream.queue.RangeDecoder(words)
            for t, idx in self._groups(table):
                s = int(self._symbols[t])
                v = np.asarray(decoder.decode(self._model(t), idx.size), dtype=np.int64)
                for i in np.flatnonzero(v == s):
                    v[i] = _decode_escape(decoder, cs, s)
                k[idx] = v + int(self.spec.cdf_offset[t])
            exhausted = decoder.maybe_exhausted()
        except (ValueError, RuntimeError, OverflowError) as e:
            raise ArtifactError(f"{source}: the payload does not decode ({e})",
                                hint="the file is corrupt or was written for another latent shape") from None
        if not exhausted:
            raise ArtifactError(f"{source}: the payload holds more data than the latent it describes",
                                hint="the file is corrupt or was written by another codec; compress the image again")
        return k


def _encode_escape(coder, cs, v: int, s: int) -> None:
    z = 2 * (-v - 1) if v < 0 else 2 * (v - s) + 1
    value = z + 1
    n = value.bit_length()
    uniform = cs.stream.model.Uniform
    coder.encode(np.array([n - 1], dtype=np.int32), uniform(_LENGTH_SYMBOLS))
    rest, bits = value - (1 << (n - 1)), n - 1
    while bits > 0:
        take = min(_CHUNK, bits)
        bits -= take
        coder.encode(np.array([(rest >> bits) & ((1 << take) - 1)], dtype=np.int32), uniform(1 << take))


def _decode_escape(decoder, cs, s: int) -> int:
    uniform = cs.stream.model.Uniform
    n = int(decoder.decode(uniform(_LENGTH_SYMBOLS), 1)[0]) + 1
    value, bits = 1, n - 1
    while bits > 0:
        take = min(_CHUNK, bits)
        bits -= take
        value = (value << take) | int(decoder.decode(uniform(1 << take), 1)[0])
    z = value - 1
    return -(z // 2) - 1 if z % 2 == 0 else z // 2 + s
