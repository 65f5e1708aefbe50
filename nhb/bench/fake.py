"""Synthetic NAS-HPO-Bench-II tables with plausible structure, for tests and demos."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nhb.bench.table import AVG_ACC_200, Table, make_meta
from nhb.space import cells as _cells
from nhb.space import nhb2


def random_table(seed: int = 0, rows: Sequence[int] | None = None, n_seeds: int = 3,
                 n_epochs: int = 12, avg_acc_200: bool = True,
                 diverged_fraction: float = 0.0, lr_indices: Sequence[int] | None = None,
                 bs_indices: Sequence[int] | None = None) -> Table:
    """A synthetic table with plausible shapes and ranges, for tests and demos (NOT real data).

    Args:
        seed: NumPy seed.
        rows: cell indices of the rows (default: the 1011 official representatives).
        n_seeds: number of training seeds (the first of 222, 555, 888, 1000, ...).
        n_epochs: epochs per run.
        avg_acc_200: also fill `extra["avg_acc_200"]` [rows, 8, 6].
        diverged_fraction: fraction of runs marked diverged (accuracies 10 %, losses NaN).
        lr_indices: keep only these learning rates (indices into `nhb2.LRS`; default all).
        bs_indices: keep only these batch sizes (indices into `nhb2.BATCH_SIZES`).

    Returns:
        The table; a sub-grid table holds exactly the full table's values (same `seed`) at
        its learning rates and batch sizes.
    """
    rng = np.random.default_rng(seed)
    cells = (_cells.cell_tables().representative if rows is None
             else np.asarray(rows, np.int32))
    n, e = len(cells), n_epochs
    run = (n, nhb2.NUM_LRS, nhb2.NUM_BS, n_seeds)
    f32 = lambda *s: rng.standard_normal(s, dtype=np.float32)
    quality = rng.uniform(40, 92, (n, nhb2.NUM_LRS, nhb2.NUM_BS, 1, 1)).astype(np.float32)
    progress = (1 - np.exp(-np.arange(1, e + 1, dtype=np.float32) / (0.3 * e))) / (
        1 - np.exp(-1 / 0.3))
    train_acc = np.clip(10 + (quality + 4 - 10) * progress + f32(*run, e), 0, 100)
    valid_acc = np.clip(10 + (quality - 10) * progress + f32(*run, e), 0, 100)
    test_acc = np.clip(valid_acc + 0.5 * f32(*run, e), 0, 100)
    loss = lambda acc: np.float32(2.3) * (1 - acc / 100) ** 1.5 + 0.05 * np.abs(f32(*run, e))
    base = rng.uniform(10, 40, (n, 1, 1, 1, 1)).astype(np.float32)
    per_bs = (np.asarray(nhb2.BATCH_SIZES, np.float32) / 128) ** -0.3
    train_time = base * per_bs[:, None, None] * (1 + 0.02 * np.abs(f32(*run, e)))
    diverged = rng.random(run) < diverged_fraction
    metrics = dict(train_acc=train_acc, train_loss=loss(train_acc), valid_acc=valid_acc,
                   valid_loss=loss(valid_acc), test_acc=test_acc, test_loss=loss(test_acc),
                   train_time=train_time, valid_time=0.4 * train_time * (1 + 0.01 * f32(e)),
                   test_time=0.16 * train_time * (1 + 0.01 * f32(e)))
    for m, a in metrics.items():
        if m.endswith("acc"):
            a[diverged] = 10.0
        elif m.endswith("loss"):
            a[diverged] = np.nan
    extra = {}
    if avg_acc_200:
        extra[AVG_ACC_200] = np.clip(quality[..., 0, 0] + 3 + f32(*run[:3]), 0, 100)
    seeds = (*nhb2.SEEDS, *range(1000, 1000 + max(0, n_seeds - 3)))[:n_seeds]
    table = Table(metrics=metrics, diverged=diverged, cells=cells, seeds=seeds,
                  meta=make_meta("random", n_epochs=e, seed=seed), extra=extra)
    if lr_indices is None and bs_indices is None:
        return table
    return sub_grid(table, lr_indices, bs_indices)


def sub_grid(table: Table, lr_indices: Sequence[int] | None = None,
             bs_indices: Sequence[int] | None = None) -> Table:
    """The table restricted to some of its learning rates / batch sizes (positions in the
    table's own `lrs` / `batch_sizes`; None keeps all)."""
    li = np.arange(len(table.lrs)) if lr_indices is None else np.asarray(lr_indices, int)
    bi = np.arange(len(table.batch_sizes)) if bs_indices is None else np.asarray(bs_indices,
                                                                                   int)
    take = lambda a: np.ascontiguousarray(a[:, li][:, :, bi])
    extra = {k: take(v) if v.ndim >= 3 else v for k, v in table.extra.items()}
    return dataclasses.replace(
        table, metrics={m: take(a) for m, a in table.metrics.items()},
        diverged=take(table.diverged), lrs=tuple(table.lrs[i] for i in li),
        batch_sizes=tuple(table.batch_sizes[i] for i in bi), extra=extra)
