"""The ``.qc`` file: a fixed little-endian header, then the entropy-coded payload.

Layout, format version 1 (40 bytes of header)::

    magic        4s  b"QCIC"
    version      B   1
    flags        B   0 (reserved; a reader refuses bits it does not know)
    height       I   image height in pixels (before padding)
    width        I   image width
    channels     H   latent channels M
    latent_h     H   latent height h
    latent_w     H   latent width w
    fingerprint  8s  the codec's fingerprint (spec.CodecSpec.fingerprint): a file is decoded only by its model
    payload_len  I   bytes of payload that follow
    payload_crc  I   CRC-32 of the payload
    header_crc   I   CRC-32 of every header byte before this field

The dither of universal quantization is regenerated from the codec's seed and never stored. Every
way a file can be wrong — not a .qc file, a newer version, a corrupt or truncated header or payload,
another model — is an :class:`ArtifactError` naming the cause, before anything is decoded.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from qcompile.runtime.errors import ArtifactError

MAGIC = b"QCIC"
VERSION = 1
_BODY = struct.Struct("<4sBBIIHHH8sII")
_CRC = struct.Struct("<I")
HEADER_BYTES = _BODY.size + _CRC.size
MAX_PIXELS = 1 << 30  # a header asking for more is refused before any latent is allocated
_RECOMPRESS = "compress the image again; the file is damaged"


@dataclass(frozen=True)
class Header:
    height: int
    width: int
    channels: int
    latent_h: int
    latent_w: int
    fingerprint: bytes


def pack(header: Header, payload: bytes) -> bytes:
    """The complete file: header (with both checksums) + payload."""
    for name, value, limit in (("height", header.height, 1 << 32), ("width", header.width, 1 << 32),
                               ("channels", header.channels, 1 << 16), ("latent height", header.latent_h, 1 << 16),
                               ("latent width", header.latent_w, 1 << 16)):
        if not 0 < value < limit:
            raise ValueError(f"{name} {value} does not fit the .qc header (1..{limit - 1})")
    body = _BODY.pack(MAGIC, VERSION, 0, header.height, header.width, header.channels, header.latent_h,
                      header.latent_w, header.fingerprint, len(payload), zlib.crc32(payload))
    return body + _CRC.pack(zlib.crc32(body)) + payload


def unpack(data: bytes, source: str) -> tuple[Header, bytes]:
    """Header and payload of a file's bytes, every field and checksum verified."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise ArtifactError(f"{source} is not a qcompile codec file (it does not start with {MAGIC!r})",
                            hint="pass a file written by `qcompile codec compress`")
    if len(data) >= 5 and data[4] > VERSION:
        raise ArtifactError(f"{source} is a codec file of format version {data[4]}; this runtime reads up to "
                            f"version {VERSION}", hint="upgrade qcompile-runtime (pip install -U qcompile-runtime)")
    if len(data) < HEADER_BYTES:
        raise ArtifactError(f"{source} is truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header",
                            hint=_RECOMPRESS)
    body = data[:_BODY.size]
    (crc,) = _CRC.unpack_from(data, _BODY.size)
    if zlib.crc32(body) != crc:
        raise ArtifactError(f"{source}: the header is corrupt (checksum mismatch)", hint=_RECOMPRESS)
    _, version, flags, height, width, channels, lh, lw, fingerprint, length, payload_crc = _BODY.unpack(body)
    if version != VERSION or flags:
        raise ArtifactError(f"{source}: format version {version} with flags {flags:#x}; this runtime reads version "
                            f"{VERSION} without flags", hint="upgrade qcompile-runtime, or compress the image again")
    payload = data[HEADER_BYTES:]
    if len(payload) != length:
        state = "truncated" if len(payload) < length else "longer than its header says"
        raise ArtifactError(f"{source} is {state}: {len(payload)} payload bytes, the header says {length}",
                            hint=_RECOMPRESS)
    if zlib.crc32(payload) != payload_crc:
        raise ArtifactError(f"{source}: the payload is corrupt (checksum mismatch)", hint=_RECOMPRESS)
    if min(height, width, channels, lh, lw) == 0:
        raise ArtifactError(f"{source}: the header describes an empty image", hint=_RECOMPRESS)
    if height * width > MAX_PIXELS:
        raise ArtifactError(f"{source}: the header describes a {height}×{width} image, more than the "
                            f"{MAX_PIXELS:,} pixels this runtime decodes", hint="the file is not a genuine .qc file")
    return Header(height, width, channels, lh, lw, fingerprint), payload
