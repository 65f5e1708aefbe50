"""Tests for nhb.data.cifar10: the vendored subset, the official split, and the error paths."""

from __future__ import annotations

import io
import pathlib
import sys
import tarfile
import types

import numpy as np
import pytest

from nhb._vendor import load_npz
from nhb.data import cifar10
from nhb.data.cifar10 import (
    CLASS_NAMES,
    NUM_CLASSES,
    Dataset,
    load_dataset,
    split_indices,
)


@pytest.fixture(scope="module")
def subset() -> Dataset:
    return load_dataset("subset")


def _index_of(images: np.ndarray, vendored: dict[str, np.ndarray]) -> np.ndarray:
    """Official index of each image, found by exact match against the vendored arrays."""
    flat = vendored["train_images"].reshape(len(vendored["train_images"]), -1)
    lookup = {row.tobytes(): i for i, row in zip(vendored["train_index"], flat, strict=True)}
    return np.array([lookup[x.tobytes()] for x in images.reshape(len(images), -1)])


def test_class_constants_agree_with_vendored_labels() -> None:
    vendored = load_npz("cifar10_subset/cifar10_subset.npz")
    for split in ("train", "test"):
        np.testing.assert_array_equal(np.unique(vendored[f"{split}_labels"]),
                                      np.arange(NUM_CLASSES))
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == NUM_CLASSES


def test_official_split() -> None:
    train_idx, valid_idx = split_indices()
    assert train_idx.shape == (25_000,) and valid_idx.shape == (25_000,)
    assert train_idx.dtype == np.int32 and valid_idx.dtype == np.int32
    assert len(np.intersect1d(train_idx, valid_idx)) == 0
    np.testing.assert_array_equal(np.union1d(train_idx, valid_idx), np.arange(50_000))
    assert len(np.unique(train_idx)) == 25_000


def test_subset_sizes_and_types(subset: Dataset) -> None:
    assert subset.name == "subset"
    assert subset.sizes == {"train": 2499, "valid": 2586, "test": 1017}
    for x, y in ((subset.train_images, subset.train_labels),
                 (subset.valid_images, subset.valid_labels),
                 (subset.test_images, subset.test_labels)):
        assert x.dtype == np.uint8 and x.shape == (len(y), 32, 32, 3)
        assert y.dtype == np.int32
        assert y.min() >= 0 and y.max() < NUM_CLASSES
        assert not x.flags.writeable and not y.flags.writeable
    assert "2499" in repr(subset)


def test_subset_follows_official_split(subset: Dataset) -> None:
    vendored = load_npz("cifar10_subset/cifar10_subset.npz")
    train_idx, valid_idx = split_indices()
    tr = _index_of(subset.train_images, vendored)
    va = _index_of(subset.valid_images, vendored)
    assert len(np.intersect1d(tr, va)) == 0
    assert np.isin(tr, train_idx).all() and np.isin(va, valid_idx).all()
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()  # official-index order
    # Every vendored image went to exactly one of train/valid.
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])),
                                  np.sort(vendored["train_index"]))
    # ... with its own label, and the test split is the vendored test set in order.
    label_of = dict(zip(vendored["train_index"].tolist(), vendored["train_labels"].tolist(),
                        strict=True))
    np.testing.assert_array_equal(subset.train_labels, [label_of[i] for i in tr])
    np.testing.assert_array_equal(subset.valid_labels, [label_of[i] for i in va])
    np.testing.assert_array_equal(subset.test_images, vendored["test_images"])
    np.testing.assert_array_equal(subset.test_labels, vendored["test_labels"])


def test_subset_spot_checks(subset: Dataset) -> None:
    vendored = load_npz("cifar10_subset/cifar10_subset.npz")
    train_idx, valid_idx = split_indices()
    row_of = {int(j): r for r, j in enumerate(vendored["train_index"])}
    for split_images, split_labels, official in (
        (subset.train_images, subset.train_labels, train_idx),
        (subset.valid_images, subset.valid_labels, valid_idx),
    ):
        in_subset = [int(j) for j in official if int(j) in row_of]
        for pos in (0, 1, 500, len(in_subset) - 1):
            r = row_of[in_subset[pos]]
            np.testing.assert_array_equal(split_images[pos], vendored["train_images"][r])
            assert split_labels[pos] == vendored["train_labels"][r]
    for pos in (0, 123, 1016):
        np.testing.assert_array_equal(subset.test_images[pos], vendored["test_images"][pos])
        assert subset.test_labels[pos] == vendored["test_labels"][pos]


def test_max_per_split(subset: Dataset) -> None:
    small = load_dataset("subset", max_per_split=10)
    assert small.sizes == {"train": 10, "valid": 10, "test": 10}
    np.testing.assert_array_equal(small.valid_images, subset.valid_images[:10])
    with pytest.raises(ValueError, match="max_per_split"):
        load_dataset("subset", max_per_split=0)


def test_bad_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="subset") as err:
        load_dataset("imagenet")
    for choice in ("subset", "cifar10", "cifar10_npz"):
        assert repr(choice) in str(err.value)


def test_cifar10_npz(tmp_path: pathlib.Path) -> None:
    """A synthetic full-size npz whose pixels encode the official index."""
    def fake(n: int) -> np.ndarray:
        x = np.zeros((n, 32, 32, 3), np.uint8)
        i = np.arange(n)
        x[:, 0, 0, 0], x[:, 0, 0, 1] = i % 256, i // 256
        return x

    path = tmp_path / "cifar10.npz"
    np.savez(path, train_images=fake(50_000), train_labels=np.arange(50_000) % 10,
             test_images=fake(10_000), test_labels=(np.arange(10_000) * 3) % 10)
    ds = load_dataset("cifar10_npz", data_dir=tmp_path)  # a folder holding cifar10.npz
    train_idx, valid_idx = split_indices()
    assert ds.name == "cifar10_npz"
    assert ds.sizes == {"train": 25_000, "valid": 25_000, "test": 10_000}
    decode = lambda x: x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)
    np.testing.assert_array_equal(decode(ds.train_images), train_idx)
    np.testing.assert_array_equal(decode(ds.valid_images), valid_idx)
    np.testing.assert_array_equal(ds.train_labels, train_idx % 10)
    np.testing.assert_array_equal(decode(ds.test_images), np.arange(10_000))
    assert ds.test_labels.dtype == np.int32


def test_cifar10_npz_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("cifar10_npz")
    with pytest.raises(FileNotFoundError):
        load_dataset("cifar10_npz", data_dir=tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks keys"):
        load_dataset("cifar10_npz", data_dir=bad)
    np.savez(bad, train_images=np.zeros((10, 32, 32, 3), np.uint8), train_labels=np.zeros(10),
             test_images=np.zeros((10, 32, 32, 3), np.uint8), test_labels=np.zeros(10))
    with pytest.raises(ValueError, match="50000"):
        load_dataset("cifar10_npz", data_dir=bad)


# ----------------------------------------------------------------------------- TFDS


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Makes every TFDS download fail at once; returns the list of attempted URLs."""
    tfds = pytest.importorskip("tensorflow_datasets")
    attempts: list[str] = []

    def fail(self, url, *args, **kwargs):
        attempts.append(str(url))
        raise ConnectionError("network disabled in tests")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fail)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", fail)
    return attempts


def test_tfds_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import -> ImportError
    with pytest.raises(RuntimeError, match="tensorflow-datasets") as err:
        load_dataset("cifar10")
    assert "'subset'" in str(err.value) and "cifar10_npz" in str(err.value)


def test_tfds_not_prepared_offline(monkeypatch: pytest.MonkeyPatch,
                                   tmp_path: pathlib.Path) -> None:
    attempts = _no_network(monkeypatch)
    with pytest.raises(RuntimeError, match="not prepared") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(err.value)
    assert "'subset'" in msg and "cifar10_npz" in msg and "cifar-10-binary.tar.gz" in msg
    assert str(tmp_path / "downloads" / "manual") in msg
    assert attempts == []  # download=False never touches the network


def test_tfds_download_fails_fast(monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: pathlib.Path) -> None:
    attempts = _no_network(monkeypatch)
    with pytest.raises(RuntimeError, match="could not download") as err:
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert "cifar10_npz" in str(err.value)
    assert attempts and "cifar-10-binary.tar.gz" in attempts[0]


def test_tfds_manual_file_triggers_prepare(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: pathlib.Path) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(b"not really")
    calls = []

    def prepare(self, download_config=None, **kwargs):
        calls.append(download_config)
        raise OSError("stop here")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", prepare)
    with pytest.raises(RuntimeError, match="stop here"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert len(calls) == 1 and pathlib.Path(calls[0].manual_dir) == manual


_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"


def _records(prefix: str, order: list[int]) -> list[dict]:
    return [{"id": f"{prefix}_{j:05d}".encode(), "label": j % 10,
             "image": np.full((32, 32, 3), j, np.uint8)} for j in order]


def test_official_order_from_tfds_ids() -> None:
    order = list(np.random.default_rng(0).permutation(12))
    images, labels = cifar10._official_order(_records("train", order), "train", 12, chunk=5)
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(12))
    np.testing.assert_array_equal(labels, np.arange(12) % 10)
    with pytest.raises(ValueError, match="expected 13"):
        cifar10._official_order(_records("train", order), "train", 13)
    with pytest.raises(ValueError, match="unexpected"):
        cifar10._official_order(_records("test", order), "train", 12)
    with pytest.raises(ValueError, match="duplicate"):
        cifar10._official_order(_records("train", [0, 1, 1]), "train", 3)


@pytest.fixture()
def fake_tfds_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    """A tiny TFDS cifar10 (4 images per batch file) prepared as array_record without TF.

    Preparing normally needs TensorFlow (extraction, PNG encoding); those steps are patched
    here. Skips if TFDS internals differ from the ones this was written against.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    pil_image = pytest.importorskip("PIL.Image")
    try:
        from tensorflow_datasets.core.download import checksums, downloader
        from tensorflow_datasets.core.features import image_feature
        from tensorflow_datasets.image_classification import cifar
    except ImportError as e:
        pytest.skip(f"TFDS layout changed: {e}")

    def record(i: int) -> bytes:
        img = np.zeros((3, 32, 32), np.uint8)
        img[0, 0, 0], img[1, 0, 0] = i % 256, i // 256
        return bytes([i % 10]) + img.tobytes()

    n = 4
    files = {f"data_batch_{b + 1}.bin": b"".join(record(b * n + i) for i in range(n))
             for b in range(5)}
    files["test_batch.bin"] = b"".join(record(100 + i) for i in range(n))
    files["batches.meta.txt"] = ("\n".join(CLASS_NAMES) + "\n").encode()
    extracted = tmp_path / "downloads" / "extracted" / "TAR_GZ.cifar-10-binary.tar.gz"
    (extracted / "cifar-10-batches-bin").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            (extracted / "cifar-10-batches-bin" / name).write_bytes(data)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())

    def encode_png(self, arr: np.ndarray) -> bytes:
        out = io.BytesIO()
        pil_image.fromarray(arr).save(out, format="png")
        return out.getvalue()

    def no_download(self, url, *args, **kwargs):
        raise ConnectionError(f"network disabled in tests ({url})")

    url_info = checksums.compute_url_info(manual / "cifar-10-binary.tar.gz")
    url_infos = {_CIFAR10_URL: checksums.UrlInfo(
        size=url_info.size, checksum=url_info.checksum, filename="cifar-10-binary.tar.gz")}
    gfile = types.SimpleNamespace(GFile=open)
    try:
        monkeypatch.setattr(downloader._Downloader, "_sync_download", no_download)
        monkeypatch.setattr(image_feature._ImageEncoder, "_encode_image", encode_png)
        monkeypatch.setattr(cifar, "tf", types.SimpleNamespace(
            io=types.SimpleNamespace(gfile=gfile)))
        monkeypatch.setattr(cifar.Cifar10, "url_infos", property(lambda self: url_infos))
        builder = tfds.builder("cifar10", data_dir=str(tmp_path), file_format="array_record")
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual), try_download_gcs=False))
    except Exception as e:  # pragma: no cover - depends on the TFDS version
        pytest.skip(f"could not build a fake TFDS cifar10 with this TFDS version: {e!r}")
    assert tfds.builder("cifar10", data_dir=str(tmp_path)).is_prepared()
    return tmp_path


def test_tfds_read_restores_official_order(fake_tfds_dir: pathlib.Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar10, "NUM_OFFICIAL_TRAIN", 20)
    monkeypatch.setattr(cifar10, "NUM_OFFICIAL_TEST", 4)
    tr_x, tr_y, te_x, te_y = cifar10._read_tfds(fake_tfds_dir, download=False)
    decode = lambda x: x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)
    np.testing.assert_array_equal(decode(tr_x), np.arange(20))
    np.testing.assert_array_equal(tr_y, np.arange(20) % 10)
    np.testing.assert_array_equal(decode(te_x), 100 + np.arange(4))
    np.testing.assert_array_equal(te_y, (100 + np.arange(4)) % 10)
    assert tr_x.dtype == np.uint8 and tr_y.dtype == np.int32


def test_tfds_wrong_size_is_rejected(fake_tfds_dir: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="expected 50000"):
        load_dataset("cifar10", data_dir=fake_tfds_dir)
