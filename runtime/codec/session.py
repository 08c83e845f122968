"""A codec session: ``compress(uint8 H×W×3) -> bytes`` and ``decompress(bytes) -> uint8 H×W×3``.

Opened by ``qcompile.runtime.load(path)`` for artifacts of kind ``codec`` (registered here). The
image is padded to a multiple of the codec's downsampling by edge replication and cropped after
decoding, so any size works. Rounding mode codes k = round(y); universal mode codes
k = round(y − u) with the dither u regenerated from (seed, node id, element index) on both sides
(:mod:`qcompile.runtime.dither`) and decodes ŷ = k + u. The decoded image is a deterministic function
of the file and the bundle: float32 decoder output, clamped, ×255, rounded half to even.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from qcompile.runtime.codec import bitstream
from qcompile.runtime.codec.entropy import EntropyCoder
from qcompile.runtime.codec.images import to_rgb
from qcompile.runtime.codec.spec import FIELD, GRAPHS, TABLES, CodecSpec, read_spec
from qcompile.runtime.container import Contents
from qcompile.runtime.dither import dither_numerators
from qcompile.runtime.errors import ArtifactError, InputError, OutputError
from qcompile.runtime.kinds import register_kind

IO_NAMES = {"encoder": ("image", "latent"), "decoder": ("latent_hat", "image")}  # contract: (input, output)


class CodecSession:
    """Compress and decompress images with one codec bundle."""

    def __init__(self, contents: Contents):
        self.contents = contents
        tables = {name: contents.table(name) for name in TABLES}
        self.spec: CodecSpec = read_spec(contents.manifest.extra[FIELD], tables, contents.graph_bytes("decoder"),
                                         contents.source)
        self.coder = EntropyCoder(self.spec)
        self._layouts: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        for role, (inp, out) in IO_NAMES.items():
            sess = contents.session(role)
            got = (sess.get_inputs()[0].name, sess.get_outputs()[0].name)
            if got != (inp, out):
                raise ArtifactError(f"{contents.source}: the {role} graph maps {got[0]!r} -> {got[1]!r}; the codec "
                                    f"contract names them {inp!r} -> {out!r}",
                                    hint="re-export the codec with `qcompile codec export`")

    @property
    def path(self):
        return self.contents.path

    @property
    def name(self) -> str:
        return str(self.spec.fields.get("model") or self.contents.path.stem)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        ds = self.spec.downsample
        return self.spec.latent_channels, -(-height // ds), -(-width // ds)

    def _tables_and_offsets(self, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Flat table index of every latent element, and the dither offsets u (universal mode; else None).

        Both depend on the latent shape only, so the last few shapes are kept (read-only arrays): a
        folder of same-sized photos computes the dither once."""
        if shape not in self._layouts:
            if len(self._layouts) >= 4:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[shape] = self._layout(shape)
        return self._layouts[shape]

    def _layout(self, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        m, h, w = shape
        channel = np.repeat(np.arange(m, dtype=np.int64), h * w)
        if not self.spec.universal:
            channel.flags.writeable = False
            return channel, None
        levels = self.spec.dither_levels
        numerators, denominator = dither_numerators(self.spec.seed, self.spec.node_id, shape, levels=levels)
        numerators = numerators.reshape(-1)
        j = (numerators + levels - 1) // 2  # numerator = 2j + 1 − L
        table, u = channel * levels + j, numerators.astype(np.float32) / np.float32(denominator)
        table.flags.writeable = u.flags.writeable = False
        return table, u

    def compress(self, image: np.ndarray, timings: dict[str, float] | None = None) -> bytes:
        """The .qc file's bytes for an 8-bit image (H×W×3; gray and RGBA are converted to RGB).

        ``timings`` (if given) receives ``network_s`` (encoder graph) and ``entropy_s`` (quantize + code)."""
        rgb, _ = to_rgb(image)
        height, width = rgb.shape[:2]
        if height * width > bitstream.MAX_PIXELS:
            raise InputError(f"the image has {height}×{width} pixels, more than the {bitstream.MAX_PIXELS:,} a .qc "
                             "file holds", hint="compress it in tiles")
        shape = self.latent_shape(height, width)
        ds = self.spec.downsample
        padded = np.pad(rgb, ((0, shape[1] * ds - height), (0, shape[2] * ds - width), (0, 0)), mode="edge")
        x = (padded.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
        start = time.perf_counter()
        (y,) = self.contents.session("encoder").run(None, {"image": np.ascontiguousarray(x)})
        network = time.perf_counter() - start
        if y.shape != (1, *shape):
            raise OutputError(f"{self.contents.source}: the encoder gave a latent of shape {list(y.shape)} for a "
                              f"{list(x.shape)} image; the manifest implies {[1, *shape]}",
                              hint="re-export the codec; its latent_channels/downsample fields disagree with it")
        if not np.isfinite(y).all():
            raise OutputError(f"{self.contents.source}: the encoder produced non-finite latents",
                              hint="check the image is 8-bit RGB; the codec's encoder may be broken")
        table, u = self._tables_and_offsets(shape)
        flat = y.astype(np.float32).reshape(-1)
        k = np.rint(flat - u if u is not None else flat).astype(np.int64)
        payload = self.coder.encode(k, table)
        entropy = time.perf_counter() - start - network
        header = bitstream.Header(height, width, *shape, self.spec.fingerprint)
        if timings is not None:
            timings.update(network_s=network, entropy_s=entropy)
        return bitstream.pack(header, payload)

    def decompress(self, data: bytes, source: str = "the codec file",
                   timings: dict[str, float] | None = None) -> np.ndarray:
        """The uint8 H×W×3 image of a .qc file's bytes; :class:`ArtifactError` if the file is not this codec's."""
        header, payload = bitstream.unpack(data, source)
        if header.fingerprint != self.spec.fingerprint:
            raise ArtifactError(
                f"{source} was compressed with another codec (fingerprint {header.fingerprint.hex()}), not with "
                f"{self.contents.source} ({self.spec.fingerprint.hex()})",
                hint="decompress it with the --model it was compressed with")
        shape = self.latent_shape(header.height, header.width)
        if (header.channels, header.latent_h, header.latent_w) != shape:
            latent = f"{header.channels}×{header.latent_h}×{header.latent_w}"
            raise ArtifactError(f"{source}: latent {latent} does not fit a {header.height}×{header.width} image "
                                f"({'×'.join(map(str, shape))})",
                                hint="the file is corrupt; compress the image again")
        start = time.perf_counter()
        table, u = self._tables_and_offsets(shape)
        k = self.coder.decode(payload, table, source)
        y_hat = k.astype(np.float32) + (u if u is not None else np.float32(0))
        entropy = time.perf_counter() - start
        (x,) = self.contents.session("decoder").run(None, {"latent_hat": y_hat.reshape(1, *shape)})
        network = time.perf_counter() - start - entropy
        ds = self.spec.downsample
        if x.shape != (1, 3, shape[1] * ds, shape[2] * ds):
            raise OutputError(f"{self.contents.source}: the decoder gave an image of shape {list(x.shape)}, expected "
                              f"{[1, 3, shape[1] * ds, shape[2] * ds]}", hint="re-export the codec")
        if not np.isfinite(x).all():
            raise OutputError(f"{self.contents.source}: the decoder produced non-finite pixels",
                              hint="the codec's decoder is broken; re-export it")
        pixels = np.rint(np.clip(x[0], 0, 1) * np.float32(255)).astype(np.uint8)
        if timings is not None:
            timings.update(network_s=network, entropy_s=entropy)
        return np.ascontiguousarray(pixels.transpose(1, 2, 0)[:header.height, :header.width])

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.contents.path), "bytes": self.contents.file_size_bytes, **self.spec.describe()}


def open_session(contents: Contents) -> CodecSession:
    return CodecSession(contents)


register_kind("codec", open_session, graphs=GRAPHS, tables=TABLES, fields=(FIELD,),
              description="learned image codec: encoder + decoder graphs and CDF tables; compress/decompress")
