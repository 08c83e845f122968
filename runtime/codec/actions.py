"""File-level codec operations, the work of ``codec compress`` and ``codec decompress`` on both command lines.

Each returns a plain dict (the ``--json`` document). Files are written atomically: an interrupted run
leaves no half-written .qc or PNG.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qcompile.runtime.atomic import atomic_write
from qcompile.runtime.codec import bitstream
from qcompile.runtime.codec.images import read_image, write_png
from qcompile.runtime.codec.shipped import model_for_file, open_codec
from qcompile.runtime.errors import ArtifactError


def _quiet(message: str) -> None:
    pass


def compress_file(image: str | Path, out: str | Path, model: str | Path | None = None,
                  log: Callable[[str], None] = _quiet, **load_options: Any) -> dict[str, Any]:
    """Compress an image file to ``out`` (.qc); the report gives sizes, bpp and timings."""
    rgb, note = read_image(image)
    if note:
        log(f"note: {note}")
    session = open_codec(model, **load_options)
    timings: dict[str, float] = {}
    data = session.compress(rgb, timings)
    size = atomic_write(out, lambda f: f.write(data))
    height, width = rgb.shape[:2]
    return {"command": "compress", "image": str(image), "out": str(out), "model": session.describe(),
            "height": height, "width": width, "bytes": size, "bpp": 8 * size / (height * width),
            "header_bytes": bitstream.HEADER_BYTES, "conversion": note, "encode": timings}


def decompress_file(source: str | Path, out: str | Path, model: str | Path | None = None,
                    log: Callable[[str], None] = _quiet, **load_options: Any) -> dict[str, Any]:
    """Decompress a .qc file to a PNG at ``out``; without ``model`` the shipped codec that wrote it is used."""
    source = Path(source)
    if not source.is_file():
        raise ArtifactError(f"codec file {source} does not exist" if not source.exists() else f"{source} is not a file",
                            hint="pass a .qc file written by `qcompile codec compress`")
    data = source.read_bytes()
    if model is None:
        header, _ = bitstream.unpack(data, str(source))
        model = model_for_file(header.fingerprint, str(source))
        log(f"decoding with the shipped codec {Path(model).stem}")
    session = open_codec(model, **load_options)
    timings: dict[str, float] = {}
    image = session.decompress(data, str(source), timings)
    size = write_png(out, image)
    return {"command": "decompress", "file": str(source), "out": str(out), "model": session.describe(),
            "height": image.shape[0], "width": image.shape[1], "bytes": len(data), "png_bytes": size,
            "decode": timings}
