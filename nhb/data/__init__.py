"""nhb.data: CIFAR-10 for the NAS-HPO-Bench-II protocol, and Fashion-MNIST shaped alike.

Loading and the official 25k/25k/10k split (`cifar10`), Fashion-MNIST from the Debian package
`dataset-fashion-mnist` split 30k/30k/10k and padded to 32x32x3 (`fashion_mnist`, also reached
as `load_dataset("fashion_mnist")`), on-device normalisation and flip/crop augmentation
(`augment`, with Cutout), DHA's 14 augmentation ops exact to Pillow (`autoaugment`; the
Pillow reference pipeline is `autoaugment_pil`, imported on demand), and static-shape epoch
batching (`batching`).
"""

from nhb.data.augment import (
    MEAN,
    PADDING,
    STD,
    apply_flip_crop,
    augment_batch,
    cutout,
    normalize,
    random_flip,
    random_flip_crop,
    sample_flip_crop_params,
)
from nhb.data.autoaugment import (
    NUM_PAIRS,
    apply_op,
    apply_pair,
    augment_pairs,
    decode_pairs,
    sample_magnitudes,
)
from nhb.data.batching import epoch_batches, eval_batches, gather_batch, num_batches
from nhb.data.cifar10 import (
    CLASS_NAMES,
    DATASET_NAMES,
    NUM_CLASSES,
    Dataset,
    load_dataset,
    split_indices,
)
from nhb.data.fashion_mnist import FASHION_CLASS_NAMES, load_fashion_mnist

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAMES",
    "FASHION_CLASS_NAMES",
    "MEAN",
    "NUM_CLASSES",
    "NUM_PAIRS",
    "PADDING",
    "STD",
    "Dataset",
    "apply_flip_crop",
    "apply_op",
    "apply_pair",
    "augment_batch",
    "augment_pairs",
    "cutout",
    "decode_pairs",
    "epoch_batches",
    "eval_batches",
    "gather_batch",
    "load_dataset",
    "load_fashion_mnist",
    "normalize",
    "num_batches",
    "random_flip",
    "random_flip_crop",
    "sample_flip_crop_params",
    "sample_magnitudes",
    "split_indices",
]
