"""CIFAR-10 with the NAS-HPO-Bench-II train/valid split (and Fashion-MNIST shaped alike).

The benchmark trains on 25,000 of the 50,000 official CIFAR-10 training images, validates on
the other 25,000 and tests on the official 10,000 test images. The split is vendored in
`third_party/nashpobench2/` as indices into the official (data_batch_1..5) order.

Four sources are supported:

* `"subset"`: the vendored 1/10-scale slice of real CIFAR-10 (2,499 / 2,586 / 1,017 images).
  Always available, no network, no TFDS.
* `"cifar10"`: the full dataset read through TensorFlow Datasets from already prepared
  data (`tfds build cifar10 --file_format=array_record`). Reading needs no TensorFlow;
  preparing does.
* `"cifar10_npz"`: a user-supplied `.npz` with `train_images, train_labels, test_images,
  test_labels` in the official order (50,000 / 10,000 images).
* `"fashion_mnist"`: not CIFAR-10: Fashion-MNIST from the Debian package
  `dataset-fashion-mnist`, split 30,000 / 30,000 / 10,000 and padded to 32x32x3 by nhb's
  choices (see `nhb.data.fashion_mnist`).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from nhb._vendor import load_npz

NUM_CLASSES = 10
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
DATASET_NAMES = ("subset", "cifar10", "cifar10_npz", "fashion_mnist")
NUM_OFFICIAL_TRAIN = 50_000
NUM_OFFICIAL_TEST = 10_000
IMAGE_SHAPE = (32, 32, 3)

_SUBSET_NPZ = "cifar10_subset/cifar10_subset.npz"
_SPLIT_NPZ = "nashpobench2/nashpobench2_cells_split.npz"
_TFDS_MANUAL_FILE = "cifar-10-binary.tar.gz"
_NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
_ID_RE = re.compile(r"^(train|test)_(\d+)$")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train / valid / test (images uint8 NHWC, labels int32).

    Attributes:
        train_images: uint8 [n_train, 32, 32, 3].
        train_labels: int32 [n_train].
        valid_images: uint8 [n_valid, 32, 32, 3].
        valid_labels: int32 [n_valid].
        test_images: uint8 [n_test, 32, 32, 3].
        test_labels: int32 [n_test].
        name: which source it came from (`"subset"`, `"cifar10"`, `"cifar10_npz"`,
            `"fashion_mnist"`).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    valid_images: np.ndarray
    valid_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    name: str

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split.

        Returns:
            `{"train": n_train, "valid": n_valid, "test": n_test}`.
        """
        return {
            "train": len(self.train_labels),
            "valid": len(self.valid_labels),
            "test": len(self.test_labels),
        }

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, sizes={self.sizes})"


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The NAS-HPO-Bench-II split of the 50,000 official CIFAR-10 training images.

    Returns:
        `(train_idx, valid_idx)`: read-only int32 [25000] each, ascending, disjoint,
        together covering `range(50000)`.
    """
    split = load_npz(_SPLIT_NPZ)
    return split["split_train_idx"], split["split_valid_idx"]


def load_dataset(
    name: str = "subset",
    data_dir: str | pathlib.Path | None = None,
    max_per_split: int | None = None,
    *,
    download: bool = False,
) -> Dataset:
    """Loads CIFAR-10 split by the NAS-HPO-Bench-II protocol, or Fashion-MNIST shaped alike.

    Args:
        name: `"subset"` (vendored slice), `"cifar10"` (full, through TFDS), `"cifar10_npz"`
            (full, from a local `.npz`) or `"fashion_mnist"` (Fashion-MNIST from the Debian
            package, see `nhb.data.fashion_mnist.load_fashion_mnist`).
        data_dir: for `"cifar10"` the TFDS data dir (None: TFDS's default); for
            `"cifar10_npz"` the `.npz` file, or a folder holding `cifar10.npz`; for
            `"fashion_mnist"` the folder of the idx `.gz` files (None: `$NHB_FASHION_MNIST_DIR`
            if set, else the Debian package's folder). Unused for `"subset"`.
        max_per_split: if given, keep only the first `max_per_split` examples of each split.
        download: `"cifar10"` only: allow TFDS to download and prepare the data if it is not
            prepared yet (needs network access and TensorFlow). Off by default so that an
            offline machine fails at once instead of retrying the download.

    Returns:
        The `Dataset`, images uint8 NHWC and labels int32, each split in official-index order.

    Raises:
        ValueError: unknown `name`, or malformed data.
        RuntimeError: `"cifar10"` could not be read through TFDS.
        FileNotFoundError: the `"cifar10_npz"` file, or the `"fashion_mnist"` files, do not
            exist.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid choices are {list(DATASET_NAMES)}")
    _check_max_per_split(max_per_split)
    if name == "fashion_mnist":
        from nhb.data.fashion_mnist import load_fashion_mnist  # here: it imports this module

        return load_fashion_mnist(data_dir, max_per_split)
    if name == "subset":
        ds = _load_subset()
    else:
        if name == "cifar10":
            arrays = _read_tfds(data_dir, download=download)
        else:
            arrays = _read_npz(data_dir)
        ds = _split_official(*arrays, name=name)
    if max_per_split is not None:
        ds = _truncate(ds, max_per_split)
    return ds


def _check_max_per_split(max_per_split: int | None) -> None:
    """Raises ValueError unless `max_per_split` is None or a positive int."""
    if max_per_split is not None and (not isinstance(max_per_split, int) or max_per_split < 1):
        raise ValueError(f"max_per_split must be a positive int or None, got {max_per_split!r}")


def _finish(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Makes contiguous, read-only copies with the canonical dtypes."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _make(name: str, *splits: tuple[np.ndarray, np.ndarray]) -> Dataset:
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (_finish(x, y) for x, y in splits)
    return Dataset(tr_x, tr_y, va_x, va_y, te_x, te_y, name=name)


def _load_subset() -> Dataset:
    data = load_npz(_SUBSET_NPZ)
    train_idx, valid_idx = split_indices()
    index = data["train_index"]
    order = np.argsort(index, kind="stable")  # official-index order
    index = index[order]
    splits = []
    for wanted in (train_idx, valid_idx):
        keep = order[np.isin(index, wanted)]
        splits.append((data["train_images"][keep], data["train_labels"][keep]))
    test_order = np.argsort(data["test_index"], kind="stable")
    splits.append((data["test_images"][test_order], data["test_labels"][test_order]))
    return _make("subset", *splits)


def _split_official(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    name: str,
) -> Dataset:
    """Splits the official 50k training images into the benchmark's 25k/25k."""
    for what, x, y, n in (
        ("train", train_images, train_labels, NUM_OFFICIAL_TRAIN),
        ("test", test_images, test_labels, NUM_OFFICIAL_TEST),
    ):
        if x.shape != (n, *IMAGE_SHAPE) or x.dtype != np.uint8:
            raise ValueError(
                f"{name}: {what}_images must be uint8 {(n, *IMAGE_SHAPE)} (NHWC, official "
                f"order), got {x.dtype} {x.shape}")
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{name}: {what}_labels must be integer ({n},), got {y.dtype} "
                             f"{y.shape}")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise ValueError(f"{name}: {what}_labels must lie in 0..{NUM_CLASSES - 1}")
    train_idx, valid_idx = split_indices()
    return _make(
        name,
        (train_images[train_idx], train_labels[train_idx]),
        (train_images[valid_idx], train_labels[valid_idx]),
        (test_images, test_labels),
    )


def _truncate(ds: Dataset, k: int) -> Dataset:
    return _make(
        ds.name,
        (ds.train_images[:k], ds.train_labels[:k]),
        (ds.valid_images[:k], ds.valid_labels[:k]),
        (ds.test_images[:k], ds.test_labels[:k]),
    )


def _read_npz(data_dir: str | pathlib.Path | None) -> tuple[np.ndarray, ...]:
    if data_dir is None:
        raise ValueError("dataset 'cifar10_npz' needs data_dir = the path of a .npz with keys "
                         f"{list(_NPZ_KEYS)} (official order)")
    path = pathlib.Path(data_dir).expanduser()
    if path.is_dir():
        path = path / "cifar10.npz"
    if not path.is_file():
        raise FileNotFoundError(f"cifar10_npz: no such file {path}")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in _NPZ_KEYS if k not in f.files]
        if missing:
            raise ValueError(f"cifar10_npz: {path} lacks keys {missing}; it has {f.files}")
        return tuple(f[k] for k in _NPZ_KEYS)


# ----------------------------------------------------------------------------- TFDS


def _alternatives(manual_dir: str) -> str:
    return (
        "Local alternatives: load_dataset('subset') (the vendored 1/10-scale slice, no "
        "download); load_dataset('cifar10_npz', data_dir='path/to/cifar10.npz') with keys "
        f"{list(_NPZ_KEYS)} in the official order; or place {_TFDS_MANUAL_FILE} (from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html) in the TFDS manual_dir {manual_dir} "
        "and load again (preparing needs TensorFlow; afterwards reading does not), or prepare "
        "elsewhere with `tfds build cifar10 --file_format=array_record` and copy the data dir."
    )


def _tf_available() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _read_tfds(
    data_dir: str | pathlib.Path | None, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads prepared TFDS cifar10 and returns it in the official order.

    Args:
        data_dir: TFDS data dir, or None for TFDS's default.
        download: whether TFDS may download and prepare missing data.

    Returns:
        `(train_images, train_labels, test_images, test_labels)` in official-index order.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise RuntimeError(
            "dataset 'cifar10' needs tensorflow-datasets, which is not importable. "
            + _alternatives("<data_dir>/downloads/manual")) from e
    try:
        builder = tfds.builder(
            "cifar10",
            data_dir=None if data_dir is None else str(data_dir),
            file_format="array_record",
        )
    except Exception as e:
        raise RuntimeError(f"could not create the TFDS cifar10 builder: {e}. "
                           + _alternatives("<data_dir>/downloads/manual")) from e
    manual_dir = pathlib.Path(str(builder.data_dir_root)) / "downloads" / "manual"
    if not builder.is_prepared():
        has_manual = (manual_dir / _TFDS_MANUAL_FILE).is_file()
        if not (download or has_manual):
            raise RuntimeError(
                f"TFDS cifar10 is not prepared in {builder.data_dir_root} and downloading is "
                "off (pass download=True on a machine with network access and TensorFlow). "
                + _alternatives(str(manual_dir)))
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    manual_dir=str(manual_dir), try_download_gcs=False))
        except Exception as e:
            raise RuntimeError(
                f"TFDS could not download/prepare cifar10 in {builder.data_dir_root} "
                f"({type(e).__name__}: {e}). " + _alternatives(str(manual_dir))) from e
    out = []
    for split, prefix, n in (("train", "train", NUM_OFFICIAL_TRAIN),
                             ("test", "test", NUM_OFFICIAL_TEST)):
        records = _tfds_split(tfds, builder, split, manual_dir)
        images, labels = _official_order(records, prefix, n)
        out += [images, labels]
    return tuple(out)


def _tfds_split(tfds: Any, builder: Any, split: str, manual_dir: pathlib.Path) -> Any:
    """One split as a random-access sequence of `{"id", "image", "label"}` records."""
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError as e:  # prepared as tfrecord: needs TensorFlow to read
        if not _tf_available():
            raise RuntimeError(
                f"TFDS cifar10 in {builder.data_dir} is stored as tfrecord, which needs "
                "TensorFlow to read; re-prepare it with file_format=array_record. "
                + _alternatives(str(manual_dir))) from e
    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return _Columns(batch)


class _Columns(Sequence):
    """A dict of equal-length columns seen as a sequence of records."""

    def __init__(self, columns: dict[str, np.ndarray]) -> None:
        self._columns = columns

    def __len__(self) -> int:
        return len(self._columns["id"])

    def __getitem__(self, i: Any) -> dict[str, Any]:
        return {k: v[i] for k, v in self._columns.items()}


def _official_order(
    records: Sequence[dict[str, Any]], prefix: str, n: int, chunk: int = 5000
) -> tuple[np.ndarray, np.ndarray]:
    """Puts TFDS cifar10 records (shuffled on disk) back into the official order.

    TFDS cifar10 gives each record an `id` such as `"train_16399"`: the position of the image
    in the official data_batch_1..5 (or test_batch) sequence.

    Args:
        records: random-access records with keys `id`, `image`, `label`.
        prefix: `"train"` or `"test"`.
        n: expected number of records.
        chunk: records fetched per `__getitems__` call.

    Returns:
        `(images uint8 [n, 32, 32, 3], labels int32 [n])` in official order.

    Raises:
        ValueError: wrong count, or ids not exactly `{prefix}_00000 .. {prefix}_{n-1}`.
    """
    if len(records) != n:
        raise ValueError(f"TFDS cifar10 {prefix} split has {len(records)} records, expected {n}")
    images = np.zeros((n, *IMAGE_SHAPE), np.uint8)
    labels = np.full((n,), -1, np.int32)
    seen = np.zeros((n,), bool)
    getitems = getattr(records, "__getitems__", None)
    for start in range(0, n, chunk):
        positions = list(range(start, min(start + chunk, n)))
        batch = getitems(positions) if getitems else [records[i] for i in positions]
        for rec in batch:
            rid = rec["id"]
            rid = rid.decode() if isinstance(rid, bytes) else str(rid)
            m = _ID_RE.match(rid)
            if m is None or m.group(1) != prefix or not 0 <= int(m.group(2)) < n:
                raise ValueError(f"unexpected TFDS cifar10 id {rid!r} in the {prefix} split")
            j = int(m.group(2))
            if seen[j]:
                raise ValueError(f"duplicate TFDS cifar10 id {rid!r}")
            seen[j] = True
            images[j] = rec["image"]
            labels[j] = rec["label"]
    return images, labels
