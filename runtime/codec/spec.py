"""What a codec bundle declares (the manifest's ``codec`` field and the CDF tables), checked once at open.

The artifact contract (kind ``codec``): graphs ``encoder`` and ``decoder``, int32 tables ``cdf``
[T, S_max + 1], ``cdf_length`` [T] and ``cdf_offset`` [T], with T = M (rounding) or M · L (universal,
table ``c · L + j`` for dither index j). Everything the bitstream depends on is validated here, before
a byte is coded, so a malformed bundle is an :class:`ArtifactError` at load time, never a wrong image
later; :attr:`CodecSpec.fingerprint` names exactly those bytes, so a file coded with another model
(or another seed) is refused instead of decoded into garbage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from qcompile.runtime.dither import PRNG, PRNG_VERSION, check_levels, check_seed
from qcompile.runtime.errors import ArtifactError

GRAPHS = ("encoder", "decoder")
TABLES = ("cdf", "cdf_length", "cdf_offset")
FIELD = "codec"  # the manifest's extra field
QUANTIZATIONS = ("round", "universal")
MAX_PRECISION = 24  # constriction's categorical models quantize to 24 bits; a finer table cannot be honoured
FINGERPRINT_BYTES = 8
_REEXPORT = "re-export the codec with `qcompile codec export`; the bundle does not follow the codec contract"


@dataclass(frozen=True)
class CodecSpec:
    """The checked codec parameters and tables of one bundle."""

    quantization: str
    latent_channels: int
    downsample: int
    precision: int
    seed: int | None
    node_id: str | None
    dither_levels: int | None
    cdf: np.ndarray  # int64 [T, S_max + 1]
    cdf_length: np.ndarray  # int64 [T]
    cdf_offset: np.ndarray  # int64 [T]
    fields: Mapping[str, Any]
    fingerprint: bytes

    @property
    def universal(self) -> bool:
        return self.quantization == "universal"

    @property
    def tables(self) -> int:
        return int(self.cdf.shape[0])

    def describe(self) -> dict[str, Any]:
        """The fields a report shows: what the codec is, without its tables."""
        keep = ("model", "curve", "quantization", "reconstruction", "alpha", "lambda", "latent_channels",
                "downsample", "dither_levels", "seed", "training")
        return {k: self.fields.get(k) for k in keep if k in self.fields} | {"fingerprint": self.fingerprint.hex()}


def read_spec(fields: Any, tables: Mapping[str, np.ndarray], decoder_graph: bytes, source: str) -> CodecSpec:
    """Check the manifest's ``codec`` field and the tables against the contract; the fingerprint covers the
    fields, the tables, the decoder graph and (universal mode) the dither generator's id and version: what
    decoding depends on."""
    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{source}: {what}", hint=_REEXPORT)

    if not isinstance(fields, Mapping):
        raise bad(f"the manifest's {FIELD!r} field is {type(fields).__name__}, not an object")
    quantization = fields.get("quantization")
    if quantization not in QUANTIZATIONS:
        raise bad(f"codec quantization is {quantization!r}; this runtime knows {list(QUANTIZATIONS)}")
    m, ds, precision = (_positive_int(fields, k, bad) for k in ("latent_channels", "downsample", "precision"))
    if precision > MAX_PRECISION:
        raise bad(f"CDF precision {precision} bits exceeds the {MAX_PRECISION} the entropy coder supports")
    seed = node_id = levels = None
    per_channel = 1
    if quantization == "universal":
        try:
            seed = check_seed(fields.get("seed"))
            levels = check_levels(fields.get("dither_levels"))
        except ValueError as e:
            raise bad(f"universal codec: {e}") from None
        node_id = fields.get("node_id")
        if not isinstance(node_id, str) or not node_id or levels == 0:
            raise bad(f"universal codec needs a node_id string and dither_levels >= 2, got "
                      f"{node_id!r} and {levels!r}")
        per_channel = levels
    cdf, length, offset = (_int_table(tables, name, bad) for name in TABLES)
    expected = m * per_channel
    if cdf.ndim != 2 or length.shape != (cdf.shape[0],) or offset.shape != (cdf.shape[0],):
        raise bad(f"tables have shapes cdf {cdf.shape}, cdf_length {length.shape}, cdf_offset {offset.shape}; "
                  "expected [T, S_max+1], [T], [T]")
    if cdf.shape[0] != expected:
        form = f"{m} channels × {per_channel} dither levels" if per_channel > 1 else f"{m} channels"
        raise bad(f"{cdf.shape[0]} CDF tables for {form}: expected {expected}")
    _check_cdfs(cdf, length, precision, bad)
    fingerprint = _fingerprint(fields, (cdf, length, offset), decoder_graph)
    return CodecSpec(quantization, m, ds, precision, seed, node_id, levels, cdf, length, offset, dict(fields),
                     fingerprint)


def _positive_int(fields: Mapping[str, Any], key: str, bad) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(f"codec field {key!r} is {value!r}, expected a positive integer")
    return value


def _int_table(tables: Mapping[str, np.ndarray], name: str, bad) -> np.ndarray:
    table = np.asarray(tables[name])
    if table.dtype.kind not in "iu":
        raise bad(f"table {name!r} has dtype {table.dtype}, expected int32")
    return table.astype(np.int64)


def _check_cdfs(cdf: np.ndarray, length: np.ndarray, precision: int, bad) -> None:
    """Every table starts at 0, ends at 2**precision and rises strictly (each symbol, overflow included,
    has probability >= 2**-precision), and has at least one regular symbol besides the overflow."""
    if (length < 3).any() or (length > cdf.shape[1]).any():
        t = int(np.flatnonzero((length < 3) | (length > cdf.shape[1]))[0])
        raise bad(f"cdf_length[{t}] = {int(length[t])}: expected 3..{cdf.shape[1]} "
                  "(at least one symbol plus the overflow symbol, within the table width)")
    columns = np.arange(cdf.shape[1])
    valid = columns[None, :] < length[:, None]
    rising = np.diff(cdf, axis=1) > 0
    ok_rise = np.where(valid[:, 1:], rising, True).all(axis=1)
    last = cdf[np.arange(len(cdf)), length - 1]
    wrong = np.flatnonzero((cdf[:, 0] != 0) | (last != 1 << precision) | ~ok_rise)
    if wrong.size:
        t = int(wrong[0])
        raise bad(f"CDF table {t} is not a {precision}-bit CDF (starts at {int(cdf[t, 0])}, ends at {int(last[t])}, "
                  f"strictly increasing: {bool(ok_rise[t])}); {wrong.size} table(s) affected")


def _fingerprint(fields: Mapping[str, Any], tables: tuple[np.ndarray, ...], decoder_graph: bytes) -> bytes:
    digest = hashlib.sha256()
    digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for table in tables:
        digest.update(np.ascontiguousarray(table, dtype="<i8").tobytes())
        digest.update(str(table.shape).encode())
    digest.update(hashlib.sha256(decoder_graph).digest())
    if fields.get("quantization") == "universal":  # a file's dither is this generator's: another one is refused
        digest.update(f"{PRNG}:{PRNG_VERSION}".encode())
    return digest.digest()[:FINGERPRINT_BYTES]
