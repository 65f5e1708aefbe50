"""nhb.data: CIFAR-10 for the NAS-HPO-Bench-II protocol.

Loading and the official 25k/25k/10k split (`cifar10`), on-device normalisation and flip/crop
augmentation (`augment`), and static-shape epoch batching (`batching`).
"""

from nhb.data.augment import (
    MEAN,
    PADDING,
    STD,
    apply_flip_crop,
    augment_batch,
    normalize,
    random_flip_crop,
    sample_flip_crop_params,
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

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAMES",
    "MEAN",
    "NUM_CLASSES",
    "PADDING",
    "STD",
    "Dataset",
    "apply_flip_crop",
    "augment_batch",
    "epoch_batches",
    "eval_batches",
    "gather_batch",
    "load_dataset",
    "normalize",
    "num_batches",
    "random_flip_crop",
    "sample_flip_crop_params",
    "split_indices",
]
