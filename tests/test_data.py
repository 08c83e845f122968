"""Tests for qcompile.data: every loader on small files written here, plus the real MNIST if present."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qcompile.data import ArrayDataset, DatasetSplits, iterate_batches, load_dataset, read_idx
from qcompile.errors import DataError

REAL_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """An IDX file: 0, 0, type 0x08 (ubyte), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(folder: Path, prefix: str, n: int, compress: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
    gz = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", x, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", y, compress)
    return x, y


# -- arrays ------------------------------------------------------------------------------------


def test_array_dataset_checks_layout_and_subsets():
    ds = ArrayDataset(np.zeros((10, 1, 2, 2), np.float32), np.arange(10, dtype=np.int64))
    assert len(ds) == 10 and len(ds.subset(3)) == 3 and len(ds.subset(50)) == 10
    np.testing.assert_array_equal(ds.subset(3).y, [0, 1, 2])
    with pytest.raises(ValueError, match="float32 NCHW"):
        ArrayDataset(np.zeros((10, 2, 2), np.float32), np.arange(10, dtype=np.int64))
    with pytest.raises(ValueError, match="10 samples but y has 9"):
        ArrayDataset(np.zeros((10, 1, 2, 2), np.float32), np.arange(9, dtype=np.int64))


def test_splits_stats_come_from_train_and_normalize_per_channel():
    x = np.zeros((4, 2, 1, 1), np.float32)
    x[:, 0] = np.array([0.0, 0.5, 0.5, 1.0]).reshape(4, 1, 1)
    x[:, 1] = 0.25  # constant channel: std falls back to 1
    train = ArrayDataset(x, np.zeros(4, np.int64))
    test = ArrayDataset(np.ones((2, 2, 1, 1), np.float32), np.zeros(2, np.int64))
    splits = DatasetSplits.build("toy", train, test, ["a"])
    assert splits.input_shape == (2, 1, 1)
    assert splits.mean == pytest.approx((0.5, 0.25)) and splits.std == pytest.approx((np.sqrt(0.125), 1.0))
    out = splits.normalize(test.x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [0.5 / np.sqrt(0.125), 0.75], rtol=1e-6)
    np.testing.assert_allclose(splits.normalize(test.x[0]), out[0])  # single CHW image too


def test_iterate_batches_in_order_with_short_last_batch():
    ds = ArrayDataset(np.zeros((150, 1, 1, 1), np.float32), np.arange(150, dtype=np.int64))
    batches = list(iterate_batches(ds, 64))
    assert [len(y) for _, y in batches] == [64, 64, 22]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), ds.y)
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(ds, 0))


# -- digits ------------------------------------------------------------------------------------


def test_digits_split_is_fixed_and_scaled():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (len(a.train), len(a.test), a.input_shape) == (1400, 397, (1, 8, 8))
    assert a.train.x.dtype == np.float32 and a.train.y.dtype == np.int64
    assert a.train.x.min() == 0.0 and a.train.x.max() == 1.0
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert a.classes == [str(i) for i in range(10)] and set(np.unique(a.test.y)) == set(range(10))
    assert a.mean[0] == pytest.approx(float(a.train.x.mean()))


# -- mnist / idx -------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_with_only_t10k_splits_80_20(tmp_path, compress):
    x, y = write_mnist(tmp_path, "t10k", 50, compress)
    ds = load_dataset(f"mnist:{tmp_path}")
    assert (len(ds.train), len(ds.test), ds.input_shape) == (40, 10, (1, 6, 5))
    np.testing.assert_allclose(ds.train.x[:, 0], x[:40] / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.test.y, y[40:])


def test_mnist_uses_train_and_t10k_files_when_both_exist(tmp_path):
    x_tr, y_tr = write_mnist(tmp_path, "train", 30, compress=True, seed=1)
    write_mnist(tmp_path, "t10k", 12, compress=False, seed=2)
    ds = load_dataset(f"mnist:{tmp_path}")
    assert (len(ds.train), len(ds.test)) == (30, 12)
    np.testing.assert_array_equal(ds.train.y, y_tr)


def test_idx_reader_rejects_bad_magic_truncation_and_mismatched_pairs(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 20)
    with pytest.raises(DataError, match="not an IDX file") as e:
        read_idx(bad)
    assert "re-download" in e.value.hint
    write_mnist(tmp_path, "t10k", 10, compress=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(DataError, match=r"declares shape \(10, 6, 5\) \(316 bytes\) but the file has 309 bytes"):
        load_dataset(f"mnist:{tmp_path}")
    write_idx(images, np.zeros((9, 6, 5)))
    with pytest.raises(DataError, match="has 9 images but t10k-labels-idx1-ubyte has 10 labels"):
        load_dataset(f"mnist:{tmp_path}")


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 2, 2)), compress=True)
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte\[\.gz\]") as e:
        load_dataset(f"mnist:{tmp_path}")
    assert e.value.hint == "add the missing file"


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"real MNIST not found at {REAL_MNIST}")
def test_real_mnist_t10k():
    ds = load_dataset(f"mnist:{REAL_MNIST}")
    assert (len(ds.train), len(ds.test), ds.input_shape) == (8000, 2000, (1, 28, 28))
    np.testing.assert_array_equal(ds.train.y[:5], [7, 2, 1, 0, 4])  # the well-known first t10k labels
    assert np.bincount(np.concatenate([ds.train.y, ds.test.y])).tolist()[:2] == [980, 1135]
    assert ds.mean[0] == pytest.approx(0.1301, abs=1e-3) and ds.std[0] == pytest.approx(0.3077, abs=1e-3)
    assert ds.train.x.min() == 0.0 and ds.train.x.max() == 1.0


# -- npz ---------------------------------------------------------------------------------------


def test_npz_nhwc_uint8_with_explicit_splits_and_classes(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8), rng.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    path = tmp_path / "rgb.npz"
    y_tr, y_te, classes = np.arange(6) % 2, np.array([1, 0]), np.array(["no", "yes"])
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, classes=classes)
    ds = load_dataset(f"npz:{path}")
    assert (ds.name, ds.input_shape, ds.classes) == ("rgb", (3, 5, 4), ["no", "yes"])
    np.testing.assert_allclose(ds.train.x, x_tr.transpose(0, 3, 1, 2) / 255, rtol=1e-6)
    assert len(ds.mean) == 3


def test_npz_x_y_form_uses_last_20_percent_as_test(tmp_path):
    x = np.random.default_rng(0).random((10, 1, 3, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 4)
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert (len(ds.train), len(ds.test), ds.classes) == (8, 2, ["0", "1", "2", "3"])
    np.testing.assert_array_equal(ds.test.x, x[8:])
    np.savez(tmp_path / "nhw.npz", x=np.zeros((5, 3, 3), np.uint8), y=np.zeros(5, np.int64))
    assert load_dataset(f"npz:{tmp_path / 'nhw.npz'}").input_shape == (1, 3, 3)


@pytest.mark.parametrize(
    "arrays, message, hint",
    [
        ({"images": np.zeros((2, 3, 3))}, r"keys \['images'\]", "np.savez"),
        ({"x": np.full((5, 3, 3), 200.0), "y": np.zeros(5)}, r"range over \[200, 200\]", "divide by 255"),
        ({"x": np.zeros((5, 3, 3), np.int32), "y": np.zeros(5)}, "dtype int32", "astype(np.uint8)"),
        ({"x": np.zeros((5, 3, 3), np.uint8), "y": np.eye(5)}, r"labels have shape \(4, 5\)", "argmax"),
        ({"x": np.zeros((5, 9, 9, 9), np.uint8), "y": np.zeros(5)}, "1, 3 or 4 channels", "reshape"),
        (
            {"x": np.zeros((5, 3, 3), np.uint8), "y": np.array([0, 1, 2, 0, 1]), "classes": np.array(["a", "b"])},
            "label 2 but only 2 classes",
            "one name per class",
        ),
    ],
)
def test_npz_problems_are_explained(tmp_path, arrays, message, hint):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    assert hint in e.value.hint


def test_corrupt_npz_is_a_data_error(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz file"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


# -- folder ------------------------------------------------------------------------------------


def write_images(folder: Path, n: int, mode: str = "L", size=(6, 4), value: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 255)
    for i in range(n):
        Image.new(mode, size, color).save(folder / f"img{i:02d}.png")


def test_folder_auto_split_every_fifth_file_grayscale(tmp_path):
    write_images(tmp_path / "cats", 10, value=51)
    write_images(tmp_path / "dogs", 5, value=102)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["cats", "dogs"] and (len(ds.train), len(ds.test)) == (12, 3)
    assert ds.input_shape == (1, 4, 6)  # (C, H, W) from PIL's (width, height) = (6, 4)
    np.testing.assert_array_equal(ds.test.y, [0, 0, 1])
    np.testing.assert_allclose(ds.train.x[ds.train.y == 1], 0.4, rtol=1e-6)


def test_folder_train_test_subfolders_rgb_most_common_size_and_size_option(tmp_path):
    write_images(tmp_path / "train" / "a", 3, mode="L", size=(8, 8), value=255)
    write_images(tmp_path / "train" / "b", 2, mode="RGB", size=(8, 8), value=255)
    write_images(tmp_path / "test" / "b", 1, mode="RGB", size=(4, 4), value=255)
    ds = load_dataset(f"folder:{tmp_path}")
    assert (len(ds.train), len(ds.test), ds.input_shape) == (5, 1, (3, 8, 8))  # one RGB image -> all RGB
    np.testing.assert_allclose(ds.test.x[0, :, 0, 0], [1.0, 0.0, 1.0])
    assert load_dataset(f"folder:{tmp_path}?size=5").input_shape == (3, 5, 5)
    with pytest.raises(DataError, match="unsupported option 'width=5'") as e:
        load_dataset(f"folder:{tmp_path}?width=5")
    assert "?size=N" in e.value.hint


def test_folder_problems_are_explained(tmp_path):
    write_images(tmp_path / "a", 3)
    with pytest.raises(DataError, match="gives 3 train and 0 test images") as e:
        load_dataset(f"folder:{tmp_path}")
    assert "every 5th image" in e.value.hint
    write_images(tmp_path / "a", 5)
    (tmp_path / "a" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*zz.png"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="has no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'a'}")


# -- dispatch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["imagenet", "mnist", "npz:", "digits:extra", "csv:/tmp/x"])
def test_unknown_spec_lists_accepted_forms(spec):
    with pytest.raises(DataError, match=f"unknown data spec {spec!r}") as e:
        load_dataset(spec)
    assert "'mnist:PATH'" in e.value.hint and "'folder:PATH[?size=N]'" in e.value.hint


def test_missing_path_names_the_spec(tmp_path):
    with pytest.raises(DataError, match=f"data spec 'npz:{tmp_path}/nope.npz': .* does not exist"):
        load_dataset(f"npz:{tmp_path}/nope.npz")


def test_data_package_does_not_import_torch():
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from qcompile.data import load_dataset\n"
        "print(len(load_dataset('digits').train), 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1400", "False"]
