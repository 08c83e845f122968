"""The shared-seed dither: Philox4x32-10 against the reference's known answers, numpy and torch bit for
bit, the same offsets in another process and with other thread counts, independent of how much is asked."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from qcompile.methods.universal import dither as torch_dither
from qcompile.runtime import dither

# Random123's tests/kat_vectors, "philox4x32 10" lines: counter (4 words), key (2 words) -> output (4 words)
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_matches_the_reference_known_answers_on_numpy_and_torch(counter, key, expected):
    out = dither.philox4x32_10([np.array([c], np.int64) for c in counter], key)
    assert tuple(int(w[0]) for w in out) == expected
    out = dither.philox4x32_10([torch.tensor([c], dtype=torch.int64) for c in counter], key)
    assert tuple(int(w[0]) for w in out) == expected


def test_node_key_is_the_documented_sha256_prefix():
    assert dither.node_key("conv1:weight") == int.from_bytes(hashlib.sha256(b"conv1:weight").digest()[:8], "little")
    assert torch_dither.node_id("stages.0.conv1", "weight") == "stages.0.conv1:weight"


def test_stream_is_pinned():
    """The algorithm is fixed for its PRNG id and version: these values may never change."""
    assert (dither.PRNG, dither.PRNG_VERSION) == ("philox4x32-10", 1)
    stream = dither.dither_stream(0, "conv1:weight", 6)
    # block 0 = Philox4x32-10(counter (0, 0, key lo, key hi), key (0, 0)), words >> 8
    key = dither.node_key("conv1:weight")
    words = dither.philox4x32_10([np.array([v], np.int64) for v in (0, 0, key & 0xFFFFFFFF, key >> 32)], (0, 0))
    assert stream[:4].tolist() == [int(w[0]) >> 8 for w in words]
    block1 = dither.philox4x32_10([np.array([v], np.int64) for v in (1, 0, key & 0xFFFFFFFF, key >> 32)], (0, 0))
    assert stream[4:].tolist() == [int(w[0]) >> 8 for w in block1[:2]]


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 7, 2**64 - 1])
@pytest.mark.parametrize("levels", [0, 2, 16, 65536])
def test_numpy_and_torch_agree_bit_for_bit(seed, levels):
    shape = (13, 3, 5, 7)
    a = dither.dither_offsets(seed, "layer.3:weight", shape, levels)
    b = torch_dither.dither_offsets(seed, "layer.3:weight", shape, levels)
    assert b.dtype == torch.float32 and a.dtype == np.float32 and tuple(b.shape) == shape
    assert np.array_equal(a.view(np.int32), b.numpy().view(np.int32))
    na, da = dither.dither_numerators(seed, "layer.3:weight", shape, levels)
    nb, db = torch_dither.dither_numerators(seed, "layer.3:weight", shape, levels)
    assert da == db and np.array_equal(na, nb.numpy())


def test_offsets_depend_on_the_index_only():
    """A prefix of a longer request, a slice from any start, any shape of the same size: the same offsets."""
    long = dither.dither_stream(5, "fc:weight", 1000)
    assert np.array_equal(dither.dither_stream(5, "fc:weight", 10), long[:10])
    assert np.array_equal(dither.dither_stream(5, "fc:weight", 77, start=301), long[301:378])
    assert np.array_equal(dither.dither_offsets(5, "fc:weight", (10, 100)).reshape(-1),
                          dither.dither_offsets(5, "fc:weight", (1000,)))


def test_seeds_and_nodes_give_unrelated_streams():
    a = dither.dither_offsets(0, "conv1:weight", (50_000,))
    for other in (dither.dither_offsets(1, "conv1:weight", (50_000,)),
                  dither.dither_offsets(0, "conv2:weight", (50_000,))):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.02
        assert (a != other).mean() > 0.99


def test_offsets_are_uniform_and_exact():
    u = dither.dither_offsets(9, "x:input", (400_000,))
    assert u.min() > -0.5 and u.max() < 0.5
    assert abs(float(u.mean())) < 0.002 and float(u.var()) == pytest.approx(1 / 12, rel=0.01)
    numerators, denominator = dither.dither_numerators(9, "x:input", (400_000,))
    assert denominator == 2**25 and np.all(numerators % 2 == 1)  # odd multiples of 2^-25: exact in float32
    assert np.array_equal(numerators.astype(np.float64) / denominator, u.astype(np.float64))
    counts, _ = np.histogram(u, bins=16, range=(-0.5, 0.5))
    assert np.all(np.abs(counts - len(u) / 16) < 5 * np.sqrt(len(u) / 16))


def test_discretised_offsets_are_cell_centres_in_equal_numbers():
    u = dither.dither_offsets(2, "x:input", (160_000,), levels=16)
    values, counts = np.unique(u, return_counts=True)
    assert np.array_equal(values, (2 * np.arange(16) + 1 - 16) / 32)
    assert np.all(np.abs(counts - 10_000) < 500)


def test_invalid_seed_levels_and_node_are_refused():
    with pytest.raises(ValueError, match=r"a dither seed is an integer in \[0, 2\^64\), got -1"):
        dither.dither_offsets(-1, "a:weight", (3,))
    with pytest.raises(ValueError, match="a power of two from 2 to 65536, got 15"):
        dither.dither_offsets(0, "a:weight", (3,), levels=15)
    with pytest.raises(ValueError, match="non-empty string"):
        dither.dither_offsets(0, "", (3,))


_CHILD = """
import sys, hashlib, torch
torch.set_num_threads(int(sys.argv[1]))
from qcompile.runtime import dither
from qcompile.methods.universal import dither as torch_dither
a = dither.dither_offsets(42, "stages.1.conv:weight", (64, 32, 3, 3), 0)
b = torch_dither.dither_offsets(42, "stages.1.conv:weight", (64, 32, 3, 3), 0)
print(hashlib.sha256(a.tobytes()).hexdigest(), hashlib.sha256(b.numpy().tobytes()).hexdigest())
"""


def test_two_processes_and_thread_counts_agree():
    here = dither.dither_offsets(42, "stages.1.conv:weight", (64, 32, 3, 3), 0)
    digest = hashlib.sha256(here.tobytes()).hexdigest()
    for threads in (1, 2):
        out = subprocess.run([sys.executable, "-c", _CHILD, str(threads)], capture_output=True, text=True, check=True)
        assert out.stdout.split() == [digest, digest]
