"""Image files in and out of the codec: 8-bit RGB arrays, read and written with Pillow.

Pillow is the runtime's ``images`` extra, not a hard dependency: ``CodecSession`` works on arrays
without it, and the commands that read or write files say how to install it when it is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qcompile.runtime.atomic import atomic_write
from qcompile.runtime.errors import DataError, InputError
from qcompile.runtime.optional import require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def to_rgb(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(uint8 H×W×3, a note saying what was converted or None): gray is replicated, alpha dropped."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InputError(f"the codec takes 8-bit images (uint8), got {a.dtype}",
                         hint="pass np.uint8 pixels in 0..255 (e.g. (x * 255).round().astype(np.uint8))")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) == 0:
        raise InputError(f"the codec takes H×W×3 RGB images, got shape {list(a.shape)}",
                         hint="pass an H×W×3 uint8 array (gray H×W and RGBA H×W×4 are converted)")
    if a.shape[2] == 3:
        return np.ascontiguousarray(a), None
    if a.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(a, 3, axis=2)), "grayscale image coded as RGB (gray in each channel)"
    return np.ascontiguousarray(a[:, :, :3]), "alpha channel dropped: the codec codes RGB only"


def read_image(path: str | Path) -> tuple[np.ndarray, str | None]:
    """(uint8 H×W×3, conversion note) of an image file."""
    image_module = require("PIL.Image", "reading images for the codec")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} does not exist" if not path.exists() else f"{path} is not a file",
                        hint="pass the path of a PNG/JPEG image")
    try:
        with image_module.open(path) as im:
            mode = im.mode
            note = None if mode == "RGB" else f"{mode} image converted to RGB"
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                note = f"{mode} image: alpha channel dropped, the codec codes RGB only"
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, image_module.DecompressionBombError) as e:
        raise DataError(f"{path} is not a readable image ({e})", hint="pass a PNG/JPEG image file") from None
    return rgb, note


def write_png(path: str | Path, image: np.ndarray) -> int:
    """Write an RGB uint8 array as a PNG atomically; returns the file size."""
    image_module = require("PIL.Image", "writing decoded images")
    picture = image_module.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder, sorted by name; a clear error if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist", hint="pass a folder of PNG/JPEG images with --data")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                        hint="pass a folder of PNG/JPEG images with --data")
    return files
