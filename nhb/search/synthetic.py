"""Synthetic NAS-HPO-Bench-II tables with a known optimum, for testing search strategies.

`separable_table` scores every stored class by its representative cell's ops plus the
distance of (lr, bs) from a chosen best pair, so that local search, model-based search and
policy gradients can climb it and the optimum is known in closed form. Not benchmark data.
"""

from __future__ import annotations

import numpy as np

from nhb.bench.table import AVG_ACC_200, METRICS, Table, make_meta
from nhb.space import cells as _cells
from nhb.space import nhb2


def separable_table(op_weights: tuple[float, float, float, float] = (2.0, 1.0, 0.5, 0.0),
                    best_lr: int = 5, best_bs: int = 2, base: float = 40.0,
                    hp_slope: float = 1.5, epoch_time: float = 1.0) -> Table:
    """A one-seed, 12-epoch table over all 1011 classes with a separable valid accuracy.

    Final valid accuracy = base + sum over the representative's 6 edges of op_weights[op]
    - hp_slope * (|lr - best_lr| + |bs - best_bs|); epoch e (1-based) has that times
    sqrt(e / 12). Test = valid - 0.5, 200-epoch = final valid + 3. Every epoch costs
    `epoch_time` s of training and of validation and half of it of testing, so a full 'valid'
    query costs 24 * epoch_time s.

    Args:
        op_weights: score per op (conv, pool, skip, zero); all equal makes cells irrelevant.
        best_lr: index of the best learning rate.
        best_bs: index of the best batch size.
        base: accuracy of a zero-score config.
        hp_slope: penalty per index step away from the best lr / bs.
        epoch_time: seconds per epoch.

    Returns:
        The table; its best config is `best_config(...)` with the same arguments.
    """
    t = _cells.cell_tables()
    rows = t.representative
    cell_score = np.asarray(op_weights, np.float64)[t.digits[rows]].sum(-1)
    lr, bs = np.arange(nhb2.NUM_LRS), np.arange(nhb2.NUM_BS)
    hp = -hp_slope * (np.abs(lr - best_lr)[:, None] + np.abs(bs - best_bs)[None, :])
    final = base + cell_score[:, None, None] + hp[None]
    prog = np.sqrt(np.arange(1, 13) / 12.0)
    valid = (final[..., None, None] * prog).astype(np.float32)  # [rows, 8, 6, 1, 12]
    shape = valid.shape
    ones = np.full(shape, epoch_time, np.float32)
    metrics = dict(train_acc=valid + 1, valid_acc=valid, test_acc=valid - 0.5,
                   train_time=ones, valid_time=ones, test_time=0.5 * ones)
    for m in METRICS:
        if m.endswith("loss"):
            metrics[m] = (1 - metrics[m.replace("loss", "acc")] / 100).astype(np.float32)
    return Table(metrics=metrics, diverged=np.zeros(shape[:4], bool), cells=rows, seeds=(222,),
                 meta=make_meta("separable"), extra={AVG_ACC_200: (final + 3).astype(np.float32)})


def best_config(op_weights: tuple[float, float, float, float] = (2.0, 1.0, 0.5, 0.0),
                best_lr: int = 5, best_bs: int = 2, base: float = 40.0) -> tuple[nhb2.Config,
                                                                                    float]:
    """The optimum of `separable_table` (the best op on every edge) and its final valid acc."""
    op = int(np.argmax(op_weights))
    return nhb2.make([op] * 6, best_lr, best_bs), float(base + 6 * max(op_weights))
