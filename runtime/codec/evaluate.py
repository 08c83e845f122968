"""Rate–distortion evaluation: codec bundles and JPEG on the same images, curves and BD-rates.

Rates are the sizes of the files actually written (each image is compressed to a .qc file in a
temporary folder, header included, and decoded back from that file); distortion is PSNR (RGB,
8-bit) and MS-SSIM of the decoded image against the original. JPEG is Pillow's encoder at the given
qualities with 4:2:0 chroma subsampling (``subsampling=2``), decoded by Pillow. Codec bundles are
grouped into curves by how they quantize (``round``, ``universal``, ``universal+soft_round``, or the
manifest's ``curve`` field when it sets one); every pair of curves gets a BD-rate.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from qcompile.runtime.codec.bdrate import bd_rate
from qcompile.runtime.codec.images import read_image
from qcompile.runtime.codec.metrics import ms_ssim, psnr
from qcompile.runtime.codec.shipped import open_codec, shipped
from qcompile.runtime.errors import ArtifactError
from qcompile.runtime.optional import require

DEFAULT_JPEG_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
JPEG = "JPEG"
MEANS = ("bpp", "psnr", "ms_ssim", "encode_network_s", "encode_entropy_s", "decode_network_s", "decode_entropy_s")


def _quiet(message: str) -> None:
    pass


def curve_of(fields: dict[str, Any]) -> str:
    """The curve a codec bundle belongs to: its manifest's ``curve``, else how it quantizes and reconstructs."""
    if fields.get("curve"):
        return str(fields["curve"])
    soft = fields.get("reconstruction") == "soft_round"
    return str(fields.get("quantization")) + ("+soft_round" if soft else "")


def _distortion(original: np.ndarray, decoded: np.ndarray, with_ms_ssim: bool) -> dict[str, float | None]:
    return {"psnr": psnr(original, decoded), "ms_ssim": ms_ssim(original, decoded) if with_ms_ssim else None}


def _mean(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out = {}
    for key in MEANS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values and len(values) == len(rows) else None
    return out


def evaluate_codec(model: str | Path, images: Sequence[tuple[str, np.ndarray]], workdir: Path, *,
                   with_ms_ssim: bool = True, log: Callable[[str], None] = _quiet, **load_options: Any) -> dict:
    """Per-image and mean rate, distortion and timings of one codec bundle."""
    session = open_codec(model, **load_options)
    session.decompress(session.compress(images[0][1]))  # warm-up: onnxruntime's first run allocates
    rows = []
    for i, (name, rgb) in enumerate(images):
        enc, dec = {}, {}
        path = workdir / f"{i}.qc"
        path.write_bytes(session.compress(rgb, enc))
        size = path.stat().st_size
        decoded = session.decompress(path.read_bytes(), str(path), dec)
        pixels = rgb.shape[0] * rgb.shape[1]
        rows.append({"image": name, "bytes": size, "bpp": 8 * size / pixels, **_distortion(rgb, decoded, with_ms_ssim),
                     "encode_network_s": enc["network_s"], "encode_entropy_s": enc["entropy_s"],
                     "decode_network_s": dec["network_s"], "decode_entropy_s": dec["entropy_s"]})
        path.unlink()
    mean = _mean(rows)
    log(f"{session.name}: {mean['bpp']:.4f} bpp, {mean['psnr']:.2f} dB")
    return {"name": session.name, "path": str(session.path), "curve": curve_of(session.spec.fields),
            "lambda": session.spec.fields.get("lambda"), "codec": session.describe(), "mean": mean, "images": rows}


def evaluate_jpeg(quality: int, images: Sequence[tuple[str, np.ndarray]], *, with_ms_ssim: bool = True) -> dict:
    """Pillow JPEG at ``quality`` with 4:2:0 subsampling: the same rows as a codec's (timings are Pillow's)."""
    image_module = require("PIL.Image", "the JPEG baseline")
    rows = []
    for name, rgb in images:
        buffer = io.BytesIO()
        start = time.perf_counter()
        image_module.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=2)
        encoded = time.perf_counter() - start
        size = buffer.tell()
        buffer.seek(0)
        start = time.perf_counter()
        with image_module.open(buffer) as im:
            decoded = np.asarray(im.convert("RGB"))
        rows.append({"image": name, "bytes": size, "bpp": 8 * size / (rgb.shape[0] * rgb.shape[1]),
                     **_distortion(rgb, decoded, with_ms_ssim), "encode_s": encoded,
                     "decode_s": time.perf_counter() - start})
    return {"name": f"JPEG q{quality}", "quality": quality, "curve": JPEG, "mean": _mean(rows), "images": rows}


def curves_of(points: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Points (name, mean bpp/PSNR/MS-SSIM) grouped by curve, each sorted by rate."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        curves.setdefault(p["curve"], []).append({"name": p["name"], **{k: p["mean"][k] for k in ("bpp", "psnr",
                                                                                                  "ms_ssim")}})
    return {name: sorted(pts, key=lambda q: q["bpp"]) for name, pts in curves.items()}


def bd_rates(curves: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """BD-rate (PSNR) of every curve against every other curve listed before it (JPEG first when present)."""
    names = sorted(curves, key=lambda n: (n != JPEG, n))
    out = []
    for anchor, test in combinations(names, 2):
        a, t = ([(p["bpp"], p["psnr"]) for p in curves[n]] for n in (anchor, test))
        if len(a) < 2 or len(t) < 2:
            out.append({"anchor": anchor, "test": test, "bd_rate_pct": None,
                        "note": "a curve needs at least 2 points"})
            continue
        out.append({"anchor": anchor, "test": test, **bd_rate(a, t)})
    return out


def evaluate(data: str | Path | Sequence[str | Path], models: Sequence[str | Path] | None = None,
             jpeg_qualities: Sequence[int] = DEFAULT_JPEG_QUALITIES, *, with_ms_ssim: bool = True,
             log: Callable[[str], None] = _quiet, **load_options: Any) -> dict[str, Any]:
    """The ``codec eval`` report: every codec (default: the shipped ones) and JPEG on the images of ``data``
    (a folder or a list of image files)."""
    from qcompile.runtime.codec.images import image_files

    files = image_files(data) if isinstance(data, (str, Path)) else [Path(p) for p in data]
    models = list(models) if models else [c["path"] for c in shipped()]
    if not models:
        raise ArtifactError("no codec to evaluate: none is shipped with this install",
                            hint="pass --model PATH.qcodec (repeat it for several)")
    images = []
    for path in files:
        rgb, note = read_image(path)
        if note:
            log(f"note: {path.name}: {note}")
        images.append((path.name, rgb))
    log(f"{len(images)} images, {len(models)} codec(s), JPEG at {len(jpeg_qualities)} qualities")
    with tempfile.TemporaryDirectory(prefix="qcompile-codec-eval-") as tmp:
        codecs = [evaluate_codec(m, images, Path(tmp), with_ms_ssim=with_ms_ssim, log=log, **load_options)
                  for m in models]
    jpeg = [evaluate_jpeg(q, images, with_ms_ssim=with_ms_ssim) for q in jpeg_qualities]
    curves = curves_of(codecs + jpeg)
    return {"command": "eval", "data": [str(f) for f in files], "images": [n for n, _ in images],
            "codecs": codecs, "jpeg": jpeg, "curves": curves, "bd_rates": bd_rates(curves),
            "ms_ssim": with_ms_ssim}
