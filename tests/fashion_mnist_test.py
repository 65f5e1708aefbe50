"""Tests for nhb.data.fashion_mnist: idx parsing, the 30k/30k/10k split, the 32x32x3 layout."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest

import nhb.data
from nhb.data import fashion_mnist as fm
from nhb.data.cifar10 import DATASET_NAMES, NUM_CLASSES, Dataset, load_dataset
from nhb.data.fashion_mnist import (
    DEBIAN_PACKAGE,
    FASHION_CLASS_NAMES,
    FASHION_MNIST_DIR,
    IMAGES_MAGIC,
    LABELS_MAGIC,
    load_fashion_mnist,
    parse_idx,
    read_idx,
    to_rgb32,
)

REAL_DIR = pathlib.Path(FASHION_MNIST_DIR)
needs_real = pytest.mark.skipif(
    not REAL_DIR.is_dir(),
    reason=f"{REAL_DIR} does not exist: install the Debian package {DEBIAN_PACKAGE} "
           f"(`apt-get install {DEBIAN_PACKAGE}`); .ci/run does so",
)


def _idx_bytes(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + data


def _write_gz(path: pathlib.Path, raw: bytes) -> pathlib.Path:
    with gzip.open(path, "wb") as f:
        f.write(raw)
    return path


# ----------------------------------------------------------------------------- idx parsing


def test_read_idx_golden_images(tmp_path: pathlib.Path) -> None:
    # Hand-written bytes: magic 00 00 08 03, dims 2, 3, 4 (big-endian), then 24 pixel bytes.
    raw = (b"\x00\x00\x08\x03" b"\x00\x00\x00\x02" b"\x00\x00\x00\x03" b"\x00\x00\x00\x04"
           + bytes(range(200, 224)))
    got = read_idx(_write_gz(tmp_path / "x-idx3-ubyte.gz", raw), IMAGES_MAGIC)
    expected = np.array([[[200, 201, 202, 203], [204, 205, 206, 207], [208, 209, 210, 211]],
                         [[212, 213, 214, 215], [216, 217, 218, 219], [220, 221, 222, 223]]],
                        np.uint8)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, expected)


def test_read_idx_golden_labels_and_big_endian_dims(tmp_path: pathlib.Path) -> None:
    # 258 labels: the count 0x00000102 only reads as 258 when parsed big-endian.
    data = bytes(i % 10 for i in range(258))
    raw = b"\x00\x00\x08\x01" b"\x00\x00\x01\x02" + data
    got = read_idx(_write_gz(tmp_path / "y-idx1-ubyte.gz", raw), LABELS_MAGIC)
    assert got.shape == (258,) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.arange(258) % 10)


def test_bad_magic_raises() -> None:
    raw = _idx_bytes(LABELS_MAGIC, (3,), b"\x01\x02\x03")
    with pytest.raises(ValueError, match=r"bad idx magic number 0x00000801, expected 0x00000803"):
        parse_idx(raw, IMAGES_MAGIC)
    with pytest.raises(ValueError, match="bad idx magic"):
        parse_idx(_idx_bytes(0x00000D03, (1, 1, 1), b"\x00"), IMAGES_MAGIC)  # float, not ubyte


def test_truncated_or_oversized_data_raises(tmp_path: pathlib.Path) -> None:
    raw = _idx_bytes(IMAGES_MAGIC, (2, 3, 4), bytes(23))  # one byte short
    path = _write_gz(tmp_path / "short.gz", raw)
    with pytest.raises(ValueError, match=r"23 bytes.*need 24.*truncated") as err:
        read_idx(path, IMAGES_MAGIC)
    assert "short.gz" in str(err.value)
    with pytest.raises(ValueError, match=r"25 bytes.*need 24"):
        parse_idx(_idx_bytes(IMAGES_MAGIC, (2, 3, 4), bytes(25)), IMAGES_MAGIC)


def test_truncated_header_raises() -> None:
    with pytest.raises(ValueError, match="too short for a header"):
        parse_idx(b"\x00\x00", IMAGES_MAGIC)
    with pytest.raises(ValueError, match="truncated idx header"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00\x00\x02", IMAGES_MAGIC)


def test_to_rgb32_golden() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 251 + 1  # no zeros
    out = to_rgb32(images.astype(np.uint8))
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, 2:30, 2:30, c], images)
    mask = np.ones((32, 32), bool)
    mask[2:30, 2:30] = False
    assert (out[:, mask, :] == 0).all()


# ----------------------------------------------------------------------------- errors, config


def test_constants_and_exports() -> None:
    assert "fashion_mnist" in DATASET_NAMES
    assert {"subset", "cifar10", "cifar10_npz"} <= set(DATASET_NAMES)
    assert FASHION_CLASS_NAMES == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert len(FASHION_CLASS_NAMES) == NUM_CLASSES
    assert nhb.data.load_fashion_mnist is load_fashion_mnist
    assert nhb.data.FASHION_CLASS_NAMES is FASHION_CLASS_NAMES
    assert {"load_fashion_mnist", "FASHION_CLASS_NAMES"} <= set(nhb.data.__all__)


def test_missing_directory_names_package(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nowhere"
    for load in (lambda: load_fashion_mnist(missing),
                 lambda: load_dataset("fashion_mnist", data_dir=missing)):
        with pytest.raises(FileNotFoundError) as err:
            load()
        msg = str(err.value)
        assert str(missing) in msg
        assert DEBIAN_PACKAGE in msg and f"apt-get install {DEBIAN_PACKAGE}" in msg
        assert "NHB_FASHION_MNIST_DIR" in msg


def test_partial_directory_lists_missing_files(tmp_path: pathlib.Path) -> None:
    _write_gz(tmp_path / "train-images-idx3-ubyte.gz", _idx_bytes(IMAGES_MAGIC, (0, 28, 28), b""))
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path)
    lacks = str(err.value).split(" lacks ")[1].split("]")[0]  # the list of missing files
    assert "t10k-labels-idx1-ubyte.gz" in lacks and "train-labels-idx1-ubyte.gz" in lacks
    assert "train-images-idx3-ubyte.gz" not in lacks


def test_env_var_and_explicit_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "from_env"
    monkeypatch.setenv("NHB_FASHION_MNIST_DIR", str(env_dir))
    assert fm.resolve_dir() == env_dir
    with pytest.raises(FileNotFoundError, match="from_env"):
        load_fashion_mnist()
    assert fm.resolve_dir(tmp_path / "explicit") == tmp_path / "explicit"  # beats the env var
    monkeypatch.delenv("NHB_FASHION_MNIST_DIR")
    assert fm.resolve_dir() == REAL_DIR


def test_wrong_counts_raise(tmp_path: pathlib.Path) -> None:
    """Well-formed idx files of the wrong size are rejected, not silently split."""
    for split, n in (("train", 4), ("t10k", 2)):
        _write_gz(tmp_path / f"{split}-images-idx3-ubyte.gz",
                  _idx_bytes(IMAGES_MAGIC, (n, 28, 28), bytes(n * 28 * 28)))
        _write_gz(tmp_path / f"{split}-labels-idx1-ubyte.gz",
                  _idx_bytes(LABELS_MAGIC, (n,), bytes(n)))
    with pytest.raises(ValueError, match=r"\(4, 28, 28\), expected \(60000, 28, 28\)"):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_bad_max_per_split(bad: object) -> None:
    with pytest.raises(ValueError, match="max_per_split"):
        load_fashion_mnist(max_per_split=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_per_split"):
        load_dataset("fashion_mnist", max_per_split=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the real data


def _raw(name: str, offset: int) -> np.ndarray:
    """Reads an official file independently of the loader: gunzip, skip the header."""
    with gzip.open(REAL_DIR / name, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@pytest.fixture(scope="module")
def full() -> Dataset:
    return load_fashion_mnist(REAL_DIR)


@pytest.fixture(scope="module")
def raw() -> dict[str, np.ndarray]:
    return {
        "train_images": _raw("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "train_labels": _raw("train-labels-idx1-ubyte.gz", 8),
        "test_images": _raw("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
        "test_labels": _raw("t10k-labels-idx1-ubyte.gz", 8),
    }


def _splits(ds: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": (ds.train_images, ds.train_labels),
            "valid": (ds.valid_images, ds.valid_labels),
            "test": (ds.test_images, ds.test_labels)}


@needs_real
def test_real_sizes_and_types(full: Dataset) -> None:
    assert full.name == "fashion_mnist"
    assert full.sizes == {"train": 30_000, "valid": 30_000, "test": 10_000}
    for x, y in _splits(full).values():
        assert x.dtype == np.uint8 and x.shape == (len(y), 32, 32, 3)
        assert y.dtype == np.int32 and y.min() >= 0 and y.max() < NUM_CLASSES
        assert not x.flags.writeable and not y.flags.writeable


@needs_real
def test_real_layout_border_and_channels(full: Dataset) -> None:
    for x, _ in _splits(full).values():
        mask = np.ones((32, 32), bool)
        mask[2:30, 2:30] = False
        assert not x[:, mask, :].any(), "the 2-pixel border must be zero"
        assert (x[..., 0] == x[..., 1]).all() and (x[..., 0] == x[..., 2]).all()
        assert x[:, 2:30, 2:30, :].any()


@needs_real
def test_real_matches_raw_files_in_official_order(full: Dataset, raw: dict) -> None:
    assert raw["train_images"].shape == (60_000, 28, 28)
    assert raw["test_images"].shape == (10_000, 28, 28)
    expected = {
        "train": (raw["train_images"][:30_000], raw["train_labels"][:30_000]),
        "valid": (raw["train_images"][30_000:], raw["train_labels"][30_000:]),
        "test": (raw["test_images"], raw["test_labels"]),
    }
    for split, (x, y) in _splits(full).items():
        raw_x, raw_y = expected[split]
        np.testing.assert_array_equal(x[:, 2:30, 2:30, 0], raw_x, err_msg=split)
        np.testing.assert_array_equal(y, raw_y, err_msg=split)


@needs_real
def test_real_class_counts(full: Dataset) -> None:
    np.testing.assert_array_equal(np.bincount(full.test_labels, minlength=10), [1000] * 10)
    train_valid = np.concatenate([full.train_labels, full.valid_labels])
    np.testing.assert_array_equal(np.bincount(train_valid, minlength=10), [6000] * 10)


@needs_real
def test_real_max_per_split_via_load_dataset(
    full: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NHB_FASHION_MNIST_DIR", raising=False)
    small = load_dataset("fashion_mnist", max_per_split=50)
    assert small.name == "fashion_mnist"
    assert small.sizes == {"train": 50, "valid": 50, "test": 50}
    small_splits, full_splits = _splits(small), _splits(full)
    for split, (x, y) in small_splits.items():
        np.testing.assert_array_equal(x, full_splits[split][0][:50], err_msg=split)
        np.testing.assert_array_equal(y, full_splits[split][1][:50], err_msg=split)
        assert x.dtype == np.uint8 and y.dtype == np.int32
