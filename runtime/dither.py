"""The shared-seed dither of universal quantization: offsets u ∈ (−½, ½) that encoder and decoder
regenerate from (seed, node id, element index) instead of storing them.

Why a counter-based generator: u of element i must be a pure function of (global seed, stable node
id, i), so it cannot depend on batch size, device, thread count or the order tensors are visited,
and two processes (the compiler that trained the model, the runtime that decodes it) agree bit for
bit. A stateful PRNG (``torch.rand`` with a generator) gives none of that.

The algorithm (``PRNG`` ``"philox4x32-10"``, ``PRNG_VERSION`` 1), fixed forever for that id/version:

1. **key** = the 64-bit seed as two 32-bit words (low, high);
2. **node key** = the first 8 bytes of SHA-256 of the node id's UTF-8 bytes, little-endian (64 bits);
   node ids are stable strings, e.g. ``"stages.0.conv1:weight"`` (qualified layer name + role);
3. element ``i`` (flat, row-major index) lies in **block** ``b = i // 4``, **lane** ``i % 4``; the
   counter of a block is ``(b low, b high, node key low, node key high)``;
4. one Philox4x32-10 evaluation (Salmon et al., SC 2011; the Random123 reference, checked against its
   known-answer vectors in the tests) of (counter, key) gives four 32-bit words: lane j takes word j;
5. the top 24 bits ``r = word >> 8`` are the **integer stream**; the offset is
   ``u = (2r + 1 − 2^24) / 2^25``, an odd multiple of 2^−25, exact in float32, never ±½;
6. **discretised** offsets (``levels`` L, a power of two from 2 to 2^16, for entropy coding or
   integer-domain decoding): ``j = (r · L) >> 24`` ∈ [0, L) and ``u = (2j + 1 − L) / (2L)``, the
   centres of L equal cells. Powers of two keep every offset exact in float32 (the denominator is a
   power of two), so no backend's division can round it differently.

Offsets are returned as integer numerators over a fixed denominator (2^25, or 2L), so integer-domain
consumers can use them exactly. The Philox rounds are written once, with operators only (``*``, ``+``,
``&``, ``^``, ``>>``, ``<<``) on non-negative int64 arrays whose products stay below 2^63 (the 32×32-bit
product is split into 16-bit halves): the same function runs on numpy arrays here and on torch
tensors (any device) in the compiler, which is why both agree bit for bit. numpy only: the runtime
imports no torch.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

PRNG = "philox4x32-10"  # the id artifacts record; a runtime that does not know it refuses them
PRNG_VERSION = 1  # bumps if anything in steps 1-6 changes
STREAM_BITS = 24  # bits of the integer stream per element
CONTINUOUS_DENOMINATOR = 1 << (STREAM_BITS + 1)  # u = numerator / 2^25

_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Philox4x32 key schedule (Weyl) increments
_ROUNDS = 10

Array = Any  # a numpy int64 array or a torch int64 tensor: anything with the integer operators


def node_key(node_id: str) -> int:
    """The 64-bit key of a node id (step 2)."""
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"a dither node id is a non-empty string, got {node_id!r}")
    return int.from_bytes(hashlib.sha256(node_id.encode("utf-8")).digest()[:8], "little")


def check_seed(seed: int) -> int:
    """A seed is an integer in [0, 2^64)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"a dither seed is an integer in [0, 2^64), got {seed!r}")
    return int(seed)


def check_levels(levels: int) -> int:
    """0 (continuous offsets) or a number of levels L, a power of two in [2, 2^16] (step 6)."""
    ok = isinstance(levels, (int, np.integer)) and not isinstance(levels, bool)
    if not ok or not (levels == 0 or (2 <= levels <= 1 << 16 and levels & (levels - 1) == 0)):
        raise ValueError(f"dither levels are 0 (continuous) or a power of two from 2 to 65536, got {levels!r}")
    return int(levels)


def _mulhilo(m: int, x: Array) -> tuple[Array, Array]:
    """(high, low) 32-bit words of m·x for 32-bit m and x, without a product reaching 2^63."""
    a = x * (m >> 16)  # < 2^48
    b = x * (m & _MASK16)  # < 2^48
    low = (((a & _MASK16) << 16) + b) & _MASK32
    high = (a + (b >> 16)) >> 16
    return high, low


def philox4x32_10(counter: Sequence[Array], key: Sequence[int]) -> tuple[Array, Array, Array, Array]:
    """Philox4x32 with 10 rounds on arrays of 32-bit words held in int64 (step 4)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(_ROUNDS):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def stream_from_index(index: Array, seed: int, node_id: str, like: Array | None = None) -> Array:
    """The 24-bit integer stream (step 5) at flat element indices ``index`` (int64, ≥ 0).

    Works on numpy arrays and torch tensors alike: only operators touch ``index``.
    """
    seed, key = check_seed(seed), node_key(node_id)
    block, lane = index >> 2, index & 3
    zero = block & 0
    words = philox4x32_10((block & _MASK32, block >> 32, zero + (key & _MASK32), zero + (key >> 32)),
                          (seed & _MASK32, seed >> 32))
    word = words[3]
    for j in (2, 1, 0):
        word = word + (lane == j) * (words[j] - word)  # select lane j's word without backend-specific calls
    return word >> (32 - STREAM_BITS)


def numerators_from_stream(stream: Array, levels: int = 0) -> tuple[Array, int]:
    """(integer numerators, denominator) of the offsets u = numerator / denominator (steps 5-6)."""
    levels = check_levels(levels)
    if levels == 0:
        return 2 * stream + 1 - (1 << STREAM_BITS), CONTINUOUS_DENOMINATOR
    return 2 * ((stream * levels) >> STREAM_BITS) + 1 - levels, 2 * levels


def dither_stream(seed: int, node_id: str, count: int, start: int = 0) -> np.ndarray:
    """The integer stream of elements ``start … start + count − 1`` of a node, as int64 in [0, 2^24)."""
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got {count}, {start}")
    return stream_from_index(np.arange(start, start + count, dtype=np.int64), seed, node_id)


def dither_numerators(seed: int, node_id: str, shape: Sequence[int], levels: int = 0) -> tuple[np.ndarray, int]:
    """(int64 numerators of ``shape``, denominator) of a node's offsets."""
    count = int(np.prod(shape, dtype=np.int64))
    numerators, denominator = numerators_from_stream(dither_stream(seed, node_id, count), levels)
    return numerators.reshape(tuple(shape)), denominator


def dither_offsets(seed: int, node_id: str, shape: Sequence[int], levels: int = 0) -> np.ndarray:
    """The float32 offsets u ∈ (−½, ½) of a node, of ``shape`` (element i of the flattened shape)."""
    numerators, denominator = dither_numerators(seed, node_id, shape, levels)
    return numerators.astype(np.float32) / np.float32(denominator)
