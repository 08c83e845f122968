"""One loader per data source, and ``load_dataset(spec)`` to pick one from a string.

Spec strings (what ``--data`` accepts on the command line):

* ``digits`` — scikit-learn's bundled 8x8 digits; 1,400 train / 397 test, split by a permutation
  with seed 0 so every run sees the same split. Needs scikit-learn (``qcompile-runtime[digits]``).
* ``mnist:PATH`` — a folder of IDX files (gz or raw). ``train-*`` + ``t10k-*`` are used as they are;
  with only ``t10k-*`` the first 80% (8,000 of 10,000) is train and the last 20% test.
* ``folder:PATH[?size=N]`` — one sub-folder per class (ImageFolder layout). ``PATH/train`` and
  ``PATH/test`` are used when both exist; otherwise every 5th file (sorted by name) of each class is
  test. Images are grayscale if every image is, else RGB (alpha dropped), and are resized
  (bilinear) to the most common size, or to N x N with ``?size=N``. Needs pillow
  (``qcompile-runtime[images]``).
* ``npz:PATH`` — keys ``x_train, y_train, x_test, y_test`` or ``x, y`` (last 20% becomes test), and
  optional ``classes``. Images NHW, NHWC or NCHW; uint8 (divided by 255) or float in [0, 1].

Every loader returns float32 NCHW images in [0, 1] and int64 labels; problems a user can hit raise
:class:`~qcompile.runtime.errors.DataError` saying what is wrong and how to fix it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from qcompile.runtime.data.arrays import ArrayDataset, DatasetSplits
from qcompile.runtime.data.idx import read_idx_pair
from qcompile.runtime.errors import DataError
from qcompile.runtime.optional import require

SPEC_FORMS = "'digits', 'mnist:PATH', 'folder:PATH[?size=N]' or 'npz:PATH'"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def load_dataset(spec: str) -> DatasetSplits:
    """Load the dataset named by ``spec`` (see the module docstring for the accepted forms)."""
    scheme, sep, rest = spec.partition(":")
    if scheme == "digits" and not sep:
        return load_digits()
    if scheme in _PATH_LOADERS and rest:
        path_text, _, query = rest.partition("?") if scheme == "folder" else (rest, "", "")
        path = Path(path_text).expanduser()
        if not path.exists():
            raise DataError(f"data spec {spec!r}: {path} does not exist", hint="check the path after the ':'")
        if scheme == "folder":
            return load_folder(path, size=_parse_size(spec, query))
        return _PATH_LOADERS[scheme](path)
    raise DataError(f"unknown data spec {spec!r}", hint=f"use one of {SPEC_FORMS}")


def load_digits() -> DatasetSplits:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to [0, 1]), split 1,400 / 397."""
    d = require("sklearn.datasets", "the 'digits' data set").load_digits()  # slow import, only when asked for
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    train, test = perm[:1400], perm[1400:]
    return _make_splits("digits", x[train], y[train], x[test], y[test], [str(i) for i in range(10)])


def load_mnist(folder: Path) -> DatasetSplits:
    """MNIST-format IDX files in ``folder``; see the module docstring for how splits are chosen."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"mnist: {folder} is not a folder", hint="pass the folder that holds the *-idx3-ubyte files")
    test = _find_idx_pair(folder, "t10k")
    if test is None:
        raise DataError(
            f"mnist: no t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz] in {folder}",
            hint="put the MNIST test files (and optionally train-*) in that folder",
        )
    train = _find_idx_pair(folder, "train")
    x_te, y_te = read_idx_pair(*test)
    if train is not None:
        x_tr, y_tr = read_idx_pair(*train)
    else:
        n_train = _train_count(len(y_te))
        x_tr, y_tr, x_te, y_te = x_te[:n_train], y_te[:n_train], x_te[n_train:], y_te[n_train:]
    where = f"mnist:{folder}"
    x_tr, x_te = (_to_unit_float(_to_nchw(x, where), where) for x in (x_tr, x_te))
    y_tr, y_te = (_labels(y, len(y), where) for y in (y_tr, y_te))
    return _make_splits("mnist", x_tr, y_tr, x_te, y_te, _default_classes(y_tr, y_te))


def load_folder(root: Path, size: int | None = None) -> DatasetSplits:
    """An ImageFolder tree under ``root``; ``size`` forces N x N images (else the most common size)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder: {root} is not a folder", hint="pass a folder with one sub-folder per class")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files, test_files = _class_files(root / "train"), _class_files(root / "test")
        extra = sorted(set(test_files) - set(train_files))
        if extra:
            raise DataError(
                f"folder: {root}/test has classes {extra} that {root}/train does not have",
                hint="use the same class sub-folders under train/ and test/",
            )
    else:
        per_class = _class_files(root)
        train_files = {c: [f for i, f in enumerate(fs) if i % 5 != 4] for c, fs in per_class.items()}
        test_files = {c: [f for i, f in enumerate(fs) if i % 5 == 4] for c, fs in per_class.items()}
    classes = sorted(train_files)
    if not classes:
        raise DataError(f"folder: {root} has no class sub-folders", hint="put each class's images in PATH/<class>/")
    train = [(f, i) for i, c in enumerate(classes) for f in train_files[c]]
    test = [(f, classes.index(c)) for c in sorted(test_files) for f in test_files[c]]
    if not train or not test:
        raise DataError(
            f"folder: {root} gives {len(train)} train and {len(test)} test images",
            hint="add images (the automatic split sends every 5th image of a class to test) "
            "or provide train/ and test/ sub-folders",
        )
    mode, wh = _choose_mode_and_size([f for f, _ in train + test], size)
    x_tr, x_te = (_read_images([f for f, _ in items], mode, wh) for items in (train, test))
    y_tr, y_te = (np.array([label for _, label in items], np.int64) for items in (train, test))
    return _make_splits(root.name, x_tr, y_tr, x_te, y_te, classes)


def load_npz(path: Path) -> DatasetSplits:
    """Arrays from a ``.npz`` file; see the module docstring for the accepted keys and layouts."""
    where = f"npz:{path}"
    arrays = _read_npz(Path(path), where)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        parts = [arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    elif {"x", "y"} <= arrays.keys():
        n_train = _train_count(len(arrays["x"]))
        x, y = arrays["x"], arrays["y"]
        parts = [x[:n_train], y[:n_train], x[n_train:], y[n_train:]]
    else:
        raise DataError(
            f"{where} has keys {sorted(arrays)}; expected x_train, y_train, x_test, y_test or x, y",
            hint="save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)",
        )
    x_tr, y_tr, x_te, y_te = parts
    x_tr, x_te = (_to_unit_float(_to_nchw(x, where), where) for x in (x_tr, x_te))
    y_tr, y_te = _labels(y_tr, len(x_tr), where), _labels(y_te, len(x_te), where)
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else _default_classes(y_tr, y_te)
    top = max(int(y_tr.max(initial=0)), int(y_te.max(initial=0)))
    if top >= len(classes):
        raise DataError(
            f"{where}: label {top} but only {len(classes)} classes are named",
            hint="list one name per class in the 'classes' array (labels are 0-based indices into it)",
        )
    return _make_splits(Path(path).stem, x_tr, y_tr, x_te, y_te, classes)


_PATH_LOADERS = {"mnist": load_mnist, "folder": load_folder, "npz": load_npz}


# -- helpers -----------------------------------------------------------------------------------


def _parse_size(spec: str, query: str) -> int | None:
    if not query:
        return None
    key, _, value = query.partition("=")
    if key != "size" or not value.isdigit() or int(value) < 1:
        raise DataError(
            f"data spec {spec!r}: unsupported option {query!r}", hint="the only option is ?size=N, e.g. ?size=32"
        )
    return int(value)


def _train_count(n: int) -> int:
    """First 80% for training, last 20% for test (8,000 / 2,000 for MNIST's t10k)."""
    return n - n // 5


def _find_idx_pair(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    def find(kind: str) -> Path | None:
        for sep in ("-", "."):  # "train-images-idx3-ubyte" and the common "train-images.idx3-ubyte"
            for suffix in ("", ".gz"):
                path = folder / f"{prefix}-{kind}{sep}{'idx3' if kind == 'images' else 'idx1'}-ubyte{suffix}"
                if path.is_file():
                    return path
        return None

    images, labels = find("images"), find("labels")
    if (images is None) != (labels is None):
        missing = f"{prefix}-{'labels-idx1' if images else 'images-idx3'}-ubyte[.gz]"
        raise DataError(f"mnist: {folder} has {(images or labels).name} but no {missing}", hint="add the missing file")
    return None if images is None else (images, labels)


def _class_files(root: Path) -> dict[str, list[Path]]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for d in dirs}


def _choose_mode_and_size(files: list[Path], size: int | None) -> tuple[str, tuple[int, int]]:
    """Grayscale ('L') only if every image is; target (width, height) = forced or most common size."""
    image = _pillow()
    modes, sizes = set(), Counter()
    for f in files:
        try:
            with image.open(f) as img:  # lazy: reads the header only
                modes.add(img.mode)
                sizes[img.size] += 1
        except (image.UnidentifiedImageError, OSError) as e:
            raise DataError(f"folder: cannot read image {f}: {e}", hint="remove or replace the file") from None
    mode = "L" if modes <= _GRAY_MODES else "RGB"
    return mode, (size, size) if size else sizes.most_common(1)[0][0]


def _read_images(files: list[Path], mode: str, wh: tuple[int, int]) -> np.ndarray:
    image = _pillow()

    def read(f: Path) -> np.ndarray:
        with image.open(f) as img:
            img = img.convert(mode)
            return np.asarray(img if img.size == wh else img.resize(wh, image.Resampling.BILINEAR))

    x = np.stack([read(f) for f in files])
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return (x / np.float32(255)).astype(np.float32)


def _pillow():
    return require("PIL.Image", "'folder:' data (reading images)")


def _read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array (.npy), not named arrays")
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"{where} is not a readable .npz file: {e}",
            hint="write it with np.savez / np.savez_compressed; store class names as a str array, not objects",
        ) from None


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """NHW -> N1HW; NHWC -> NCHW when the last axis looks like channels (1, 3, 4) and axis 1 does not."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        last_is_c, first_is_c = x.shape[3] in (1, 3, 4), x.shape[1] in (1, 3, 4)
        if last_is_c and not first_is_c:
            return x.transpose(0, 3, 1, 2)
        if first_is_c:
            return x
    raise DataError(
        f"{where}: images have shape {x.shape}; expected NHW, NHWC or NCHW with 1, 3 or 4 channels",
        hint="reshape the images to (N, H, W), (N, H, W, C) or (N, C, H, W)",
    )


def _to_unit_float(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 -> /255; float must already be in [0, 1]. Anything else is ambiguous, so we refuse it."""
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x / np.float32(255), dtype=np.float32)
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if np.isfinite(lo) and np.isfinite(hi) and lo >= -1e-6 and hi <= 1 + 1e-6:
            return np.ascontiguousarray(np.clip(x, 0, 1), dtype=np.float32)
        hint = "divide by 255" if 1 < hi <= 255 and lo >= 0 else "rescale the values to [0, 1]"
        raise DataError(f"{where}: float images must be in [0, 1] but range over [{lo:g}, {hi:g}]", hint=hint)
    raise DataError(
        f"{where}: images have dtype {x.dtype}; expected uint8 (0..255) or float in [0, 1]",
        hint="convert with x.astype(np.uint8) if the values are 0..255",
    )


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim != 1:
        hint = "use y.argmax(axis=1) for one-hot labels" if y.ndim == 2 and y.shape[1] > 1 else "use y.ravel()"
        raise DataError(f"{where}: labels have shape {y.shape}; expected ({n},)", hint=hint)
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels", hint="give exactly one label per image")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise DataError(
            f"{where}: labels have dtype {y.dtype}; expected integer class indices", hint="store labels as int"
        )
    if y.size and y.min() < 0:
        raise DataError(f"{where}: negative label {int(y.min())}", hint="labels must be 0-based class indices")
    return y.astype(np.int64)


def _default_classes(*ys: np.ndarray) -> list[str]:
    return [str(i) for i in range(max(int(y.max(initial=0)) for y in ys) + 1)]


def _make_splits(name: str, x_tr, y_tr, x_te, y_te, classes: list[str]) -> DatasetSplits:
    if len(x_tr) == 0 or len(x_te) == 0:
        raise DataError(f"{name}: {len(x_tr)} train and {len(x_te)} test samples", hint="both splits need samples")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"{name}: train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]} (C, H, W)",
            hint="give both splits the same image size and channel count",
        )
    return DatasetSplits.build(name, ArrayDataset(x_tr, y_tr), ArrayDataset(x_te, y_te), classes)
