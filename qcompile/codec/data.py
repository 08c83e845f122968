"""Photos for training and evaluating codecs: a folder of PNG/JPEG files → uint8 crops.

Training sees random crops (with random horizontal flips) drawn once per run from a seed, held as
uint8 (a quarter of float32's memory); the loop's epochs walk through them in a seeded order, so a
run is repeatable and resumable like any other. The last ``holdout`` photos of the sorted folder are
never cropped for training: they are the generalisation set (and the loop's test set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qcompile.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class ImageSet:
    """uint8 images [N, 3, H, W] (``x``) with dummy labels (``y``): a codec's targets are its inputs."""

    x: np.ndarray
    y: np.ndarray
    names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.x)


def list_images(folder: str | Path) -> list[Path]:
    """The PNG/JPEG files of ``folder``, sorted by name; a DataError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images", hint="pass --data DIR, a folder of PNG or JPEG photos")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise DataError(f"{folder} holds no PNG or JPEG file", hint="pass --data DIR, a folder of PNG or JPEG photos")
    return files


def load_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 [3, H, W]."""
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow is a dependency of the codec commands
        raise DataError("reading photos needs pillow", hint="pip install pillow") from e
    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}", hint="remove or replace the file") from e


def split_photos(folder: str | Path, holdout: int) -> tuple[list[Path], list[Path]]:
    """(training photos, held-out photos): the last ``holdout`` of the sorted folder are held out."""
    files = list_images(folder)
    if not 0 <= holdout < len(files):
        raise DataError(f"cannot hold out {holdout} of the {len(files)} photos in {folder}",
                        hint=f"use a hold-out count from 0 to {len(files) - 1}")
    return (files[:len(files) - holdout], files[len(files) - holdout:]) if holdout else (files, [])


def random_crops(images: list[np.ndarray], count: int, size: int, seed: int, flips: bool = True) -> ImageSet:
    """``count`` crops of ``size``×``size`` from images at least that large, chosen with ``seed``."""
    usable = [im for im in images if min(im.shape[1:]) >= size]
    if not usable:
        raise DataError(f"no photo is at least {size}x{size} pixels", hint="use a smaller --crop")
    rng = np.random.default_rng(seed)
    x = np.empty((count, 3, size, size), dtype=np.uint8)
    for i in range(count):
        im = usable[rng.integers(len(usable))]
        top = rng.integers(im.shape[1] - size + 1)
        left = rng.integers(im.shape[2] - size + 1)
        crop = im[:, top:top + size, left:left + size]
        x[i] = crop[:, :, ::-1] if flips and rng.random() < 0.5 else crop
    return ImageSet(x, np.zeros(count, dtype=np.int64))


def centre_crops(images: list[np.ndarray], size: int, names: tuple[str, ...] = ()) -> ImageSet:
    """One ``size``×``size`` centre crop per image at least that large (a fixed test set)."""
    kept = [(im, n) for im, n in zip(images, names or [""] * len(images)) if min(im.shape[1:]) >= size]
    if not kept:
        raise DataError(f"no held-out photo is at least {size}x{size} pixels", hint="use a smaller --crop")
    crops = []
    for im, _ in kept:
        top, left = (im.shape[1] - size) // 2, (im.shape[2] - size) // 2
        crops.append(im[:, top:top + size, left:left + size])
    return ImageSet(np.stack(crops), np.zeros(len(crops), dtype=np.int64), tuple(n for _, n in kept))


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """[..., H, W] padded at the bottom/right by edge replication to multiples of ``multiple``."""
    h, w = image.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return image
    pad = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(image, pad, mode="edge")
