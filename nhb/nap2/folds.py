"""Cross-validation folds over architectures: every run of a group (cell class) in one fold."""

from __future__ import annotations

import numpy as np


def cv_folds(groups: np.ndarray, n_folds: int = 4, seed: int = 0) -> np.ndarray:
    """Assigns whole groups to folds: shuffled, then greedily largest-first to the smallest fold.

    Args:
        groups: int [N] group (cell class) of every run.
        n_folds: number of folds (paper: 4).
        seed: shuffle seed (ties between equal-size groups follow the shuffle).

    Returns:
        int [N] fold id in 0..n_folds-1; all runs of a group share one fold.

    Raises:
        ValueError: fewer groups than folds, or n_folds < 2.
    """
    uniq, inv, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if n_folds < 2 or len(uniq) < n_folds:
        raise ValueError(f"cv_folds needs n_folds >= 2 and at least n_folds groups; got "
                         f"n_folds={n_folds} and {len(uniq)} distinct groups")
    order = np.random.default_rng(seed).permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    fold_of, size = np.zeros(len(uniq), np.int64), np.zeros(n_folds, np.int64)
    for g in order:
        f = int(np.argmin(size))
        fold_of[g], size[f] = f, size[f] + counts[g]
    return fold_of[inv.reshape(-1)]


def split_train_valid(groups: np.ndarray, train_mask: np.ndarray, valid_fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Holds whole groups of the training runs out for early stopping.

    Args:
        groups: int [N] group of every run.
        train_mask: bool [N] runs available for training (e.g. `folds != test_fold`).
        valid_fraction: target share of those runs held out (at least one group).
        seed: group shuffle seed.

    Returns:
        Sorted run indices (train_idx, valid_idx); no group in both.

    Raises:
        ValueError: fewer than 2 groups among the training runs.
    """
    groups, mask = np.asarray(groups), np.asarray(train_mask, bool)
    idx = np.nonzero(mask)[0]
    uniq, counts = np.unique(groups[idx], return_counts=True)
    if len(uniq) < 2:
        raise ValueError(f"split_train_valid needs >= 2 groups among the training runs, got "
                         f"{len(uniq)}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    cum = np.cumsum(counts[order])
    k = int(np.clip(np.argmin(np.abs(cum - valid_fraction * len(idx))) + 1, 1, len(uniq) - 1))
    held = np.isin(groups[idx], uniq[order[:k]])
    return idx[~held], idx[held]


# ----------------------------------------------------------------------------- autoencoder
