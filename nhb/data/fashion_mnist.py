"""Fashion-MNIST, read from the Debian package `dataset-fashion-mnist`, shaped for the protocol.

The package installs the four official gzipped idx files in `FASHION_MNIST_DIR`
(`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`,
`t10k-labels-idx1-ubyte.gz`). They are parsed here with numpy only.

Fashion-MNIST is not part of NAS-HPO-Bench-II; the following are nhb's choices, made so that the
CIFAR-10 training protocol runs on it unchanged:

* Split: like NAS-HPO-Bench-II halves CIFAR-10's 50,000 training images, the official 60,000
  training images are halved: the first 30,000 (official order) are `train`, the last 30,000
  are `valid`. The official 10,000 test images are `test`. Each split keeps the official order.
* Images: each 28x28 grey image is zero-padded by 2 pixels on every side to 32x32 and its
  channel repeated 3 times, giving uint8 NHWC [N, 32, 32, 3] like CIFAR-10, so the CIFAR-10
  networks and the flip/crop augmentation apply as they are (normalisation then uses the
  protocol's CIFAR-10 `MEAN`/`STD`, unchanged).
* Location: `data_dir=None` means `$NHB_FASHION_MNIST_DIR` if set, else `FASHION_MNIST_DIR`.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

from nhb.data.cifar10 import NUM_CLASSES, Dataset, _check_max_per_split, _make, _truncate

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
ENV_VAR = "NHB_FASHION_MNIST_DIR"
FASHION_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
NUM_OFFICIAL_TRAIN = 60_000
NUM_OFFICIAL_TEST = 10_000
NUM_TRAIN = NUM_OFFICIAL_TRAIN // 2  # first half of the official training set; the rest: valid
RAW_SIDE = 28
PAD = 2  # (32 - 28) / 2

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: str | pathlib.Path, magic: int) -> np.ndarray:
    """Reads a gzipped idx file of unsigned bytes.

    Args:
        path: the `.gz` file.
        magic: the expected magic number (`IMAGES_MAGIC` or `LABELS_MAGIC`); its low byte is
            the number of dimensions.

    Returns:
        uint8 array of the shape given by the header's big-endian dimensions.

    Raises:
        ValueError: wrong magic number, or a header or data size that does not match.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return parse_idx(raw, magic, source=str(path))


def parse_idx(raw: bytes, magic: int, source: str = "<bytes>") -> np.ndarray:
    """Parses the (already decompressed) bytes of an idx file of unsigned bytes.

    Args:
        raw: the file's bytes.
        magic: the expected magic number; its low byte is the number of dimensions.
        source: what to call the data in error messages.

    Returns:
        uint8 array of the shape given by the header's big-endian dimensions.

    Raises:
        ValueError: wrong magic number, or a header or data size that does not match.
    """
    if len(raw) < 4:
        raise ValueError(f"{source}: not an idx file: {len(raw)} bytes, too short for a header")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ValueError(f"{source}: bad idx magic number 0x{got:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source}: truncated idx header: {len(raw)} bytes, expected at least "
                         f"{header} for {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    size = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != size:
        raise ValueError(f"{source}: idx data has {len(raw) - header} bytes, but the header's "
                         f"dimensions {dims} need {size} (truncated or corrupt file)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def resolve_dir(data_dir: str | pathlib.Path | None = None) -> pathlib.Path:
    """The folder the idx files are read from.

    Args:
        data_dir: an explicit folder, or None for `$NHB_FASHION_MNIST_DIR` if set, else
            `FASHION_MNIST_DIR`.

    Returns:
        The folder (not checked for existence).
    """
    if data_dir is None:
        data_dir = os.environ.get(ENV_VAR) or FASHION_MNIST_DIR
    return pathlib.Path(data_dir).expanduser()


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """Zero-pads 28x28 grey images to 32x32 and repeats the channel 3 times.

    Args:
        images: uint8 [N, 28, 28].

    Returns:
        uint8 [N, 32, 32, 3], the image at `[:, 2:30, 2:30, c]` for each channel `c`, zeros
        elsewhere.
    """
    n, h, w = images.shape
    out = np.zeros((n, h + 2 * PAD, w + 2 * PAD, 3), np.uint8)
    out[:, PAD:PAD + h, PAD:PAD + w, :] = images[..., None]
    return out


def load_fashion_mnist(
    data_dir: str | pathlib.Path | None = None, max_per_split: int | None = None
) -> Dataset:
    """Loads Fashion-MNIST split 30,000 / 30,000 / 10,000 (see the module docstring).

    Args:
        data_dir: folder holding the four official `.gz` idx files; None means
            `$NHB_FASHION_MNIST_DIR` if set, else `FASHION_MNIST_DIR`.
        max_per_split: if given, keep only the first `max_per_split` examples of each split.

    Returns:
        `Dataset` named `"fashion_mnist"`: images uint8 [N, 32, 32, 3], labels int32, each split
        in official order.

    Raises:
        FileNotFoundError: the folder or one of the files is missing.
        ValueError: bad `max_per_split`, or malformed files (magic, sizes, counts, labels).
    """
    _check_max_per_split(max_per_split)
    folder = resolve_dir(data_dir)
    paths = {key: folder / fname for key, fname in FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        where = (f"{folder} lacks {missing}" if folder.is_dir()
                 else f"no such directory {folder}")
        raise FileNotFoundError(
            f"Fashion-MNIST: {where}. Install the Debian package {DEBIAN_PACKAGE} "
            f"(`apt-get install {DEBIAN_PACKAGE}`, which puts the files in {FASHION_MNIST_DIR}), "
            f"or point data_dir or ${ENV_VAR} at a folder holding {sorted(FILES.values())}.")
    arrays = {}
    for split, n in (("train", NUM_OFFICIAL_TRAIN), ("test", NUM_OFFICIAL_TEST)):
        images = read_idx(paths[f"{split}_images"], IMAGES_MAGIC)
        labels = read_idx(paths[f"{split}_labels"], LABELS_MAGIC)
        if images.shape != (n, RAW_SIDE, RAW_SIDE):
            raise ValueError(f"Fashion-MNIST: {paths[f'{split}_images']} holds images of shape "
                             f"{images.shape}, expected {(n, RAW_SIDE, RAW_SIDE)}")
        if labels.shape != (n,):
            raise ValueError(f"Fashion-MNIST: {paths[f'{split}_labels']} holds "
                             f"{labels.shape[0]} labels, expected {n}")
        if labels.max() >= NUM_CLASSES:
            raise ValueError(f"Fashion-MNIST: {paths[f'{split}_labels']} has labels outside "
                             f"0..{NUM_CLASSES - 1}")
        arrays[split] = (to_rgb32(images), labels)
    train_x, train_y = arrays["train"]
    ds = _make(
        "fashion_mnist",
        (train_x[:NUM_TRAIN], train_y[:NUM_TRAIN]),
        (train_x[NUM_TRAIN:], train_y[NUM_TRAIN:]),
        arrays["test"],
    )
    if max_per_split is not None:
        ds = _truncate(ds, max_per_split)
    return ds
