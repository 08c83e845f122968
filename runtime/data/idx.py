"""Reader for the IDX format used by MNIST (and Fashion-MNIST, EMNIST), gzipped or raw.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the data in row-major order. We check every part of that header against the
file size, because a truncated download otherwise shows up much later as a shape error.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from qcompile.runtime.errors import DataError

# type code -> big-endian numpy dtype
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_REDOWNLOAD = "re-download the file (e.g. from https://yann.lecun.com/exdb/mnist/ or a mirror) and check its size"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` is detected by its magic bytes, not its name) into a numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}", hint="check the path") from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}", hint=_REDOWNLOAD) from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file, validating magic number and size."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{where} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})", hint=_REDOWNLOAD)
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{where}: IDX header is truncated or declares {ndim} dimensions", hint=_REDOWNLOAD)
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{where}: header declares shape {shape} ({expected} bytes) but the file has {len(raw)} bytes",
            hint=_REDOWNLOAD,
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) and labels (N,) from two IDX files, checked to belong together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(
            f"{images_path} should hold images (3 dimensions: N, H, W) but has shape {images.shape}",
            hint="pass the *-images-idx3-ubyte file, not the labels file",
        )
    if labels.ndim != 1:
        raise DataError(
            f"{labels_path} should hold labels (1 dimension) but has shape {labels.shape}",
            hint="pass the *-labels-idx1-ubyte file, not the images file",
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels",
            hint="use the images and labels files of the same split (train-* with train-*, t10k-* with t10k-*)",
        )
    return images, labels
