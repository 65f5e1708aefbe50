"""The NAS-HPO-Bench-II query API as a jittable gather, charging time as the official client.

`Benchmark` holds a table's per-query values on device, packed so one query reads one
contiguous record: for every (row, lr, bs, seed, epoch) the valid/test accuracy and loss at
that epoch and the simulated cost of a query stopping there, in 'valid' and in 'test' mode.
Costs follow `nashpobench2api` (docs/protocol.md §5; see `nhb.bench.official`):

- a full query (epoch 12) costs `total_trainval_time` in 'valid' mode and
  `total_trainval_time + total_test_time` in 'test' mode (the table's official totals in
  `Table.extra` when present, else the sums of the per-epoch times);
- a partial query at epoch e < 12 costs the sum over epochs 0..e-1 of train + valid times
  ('valid') or train + valid + test times ('test'), and returns the epoch-e values of the
  12-epoch (cosine) run;
- epoch 200 returns the 200-epoch test accuracy (table `avg_acc_200`, or an attached
  surrogate's prediction) and costs nothing.

Queries also return the cell's parameters and FLOPs (`nhb.bench.objectives`; multi-objective).

Costs are summed in float64 on the host and stored as float32. A `Benchmark` is a pytree, so it
is passed into jitted functions as an argument (not baked in as a constant).

Tables may hold a sub-grid: some cell classes, some of the 8 learning rates and some of the 6
batch sizes (`Benchmark.space`, a `SearchSpace`). Configs keep the full-grid indices
(`nhb2.Config.lr` indexes `nhb2.LRS`, `.bs` indexes `nhb2.BATCH_SIZES`); the benchmark maps
them to the table's slots. A config outside the table (a cell whose class is not stored, or an
lr / batch size the table lacks): `query` on concrete configs raises a ValueError naming what
is absent and what the table holds; inside `jit` (traced configs) the results are NaN
(accuracies, losses and cost), which strategies treat as a failed evaluation (the runner
charges 0 s for it).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nhb.bench.objectives import objective_tables, scale_of_meta
from nhb.bench.subspace import SearchSpace
from nhb.bench.table import AVG_ACC_200, Table, load_table
from nhb.space import nhb2

SEED_CHOICES = ("official", "random", "mean", "<int seed index>")
MODES = ("valid", "test")
FIELDS = ("valid_acc", "test_acc", "valid_loss", "test_loss", "cost_valid", "cost_test")
_TOTALS = ("total_train_time", "total_trainval_time", "total_test_time")


class SurrogateLike(Protocol):
    """Anything with `predict(cfg) -> 200-epoch test accuracy (%)` for a batch of configs."""

    def predict(self, cfg: nhb2.Config) -> jax.Array:
        """Predicted 200-epoch test accuracy (%) of each config."""


@struct.dataclass
class QueryResult:
    """Values returned by `Benchmark.query` (arrays of the configs' batch shape).

    Attributes:
        valid_acc: validation accuracy (%) at the queried epoch.
        test_acc: test accuracy (%) at the queried epoch (the 200-epoch value for epoch 200).
        valid_loss: validation loss (NaN for official data, which has none).
        test_loss: test loss.
        cost: simulated seconds charged (0 for epoch 200).
        params: int32 parameters of the queried cell's network, stored or not (None only in
            hand-built results); flops: int32 MACs of its forward pass of one image.
    """

    valid_acc: jax.Array
    test_acc: jax.Array
    valid_loss: jax.Array
    test_loss: jax.Array
    cost: jax.Array
    params: jax.Array | None = None
    flops: jax.Array | None = None


@jax.tree_util.register_pytree_node_class
class Benchmark:
    """A NAS-HPO-Bench-II table as a query API (a pytree; see the module docstring).

    `Benchmark(table_or_path, surrogate=None)`; pass it to jitted functions as an argument.

    Attributes:
        packed: float32 [rows, lrs, bss, seeds, epochs, 6], the `FIELDS` of each query (lrs /
            bss: the table's, `space.lrs` / `space.bss` in full-grid indices).
        acc_200: float32 [rows, lrs, bss] 200-epoch test accuracy (NaN if unavailable).
        row_of_cell: int32 [4096] table row of each cell (-1 where its class is absent).
        cells: int32 [rows] cell index of each row.
        params_of_cell, flops_of_cell: int32 [4096] parameters / MACs of each cell's network
            at the table's scale (`nhb.bench.objectives.objective_tables`).
        seeds: the training seeds (static).
        official_seed: index of the seed the official client reads (the smallest; static).
        has_200: whether 200-epoch values are available (static).
        space: the `SearchSpace` the table covers (static): covered cells, lr and batch-size
            indices, `space.is_full`, `space.n_configs`.
    """

    _CHILDREN = ("packed", "acc_200", "row_of_cell", "cells", "params_of_cell", "flops_of_cell")
    _STATIC = ("seeds", "official_seed", "has_200", "space")

    def __init__(self, table: Table | str | os.PathLike, surrogate: SurrogateLike | None = None,
                 chunk: int = 8192):
        """Builds the device arrays from a `Table` (or a table file / build directory).

        Args:
            table: the table or its path (see `nhb.bench.load_table`); any sub-grid of
                classes, benchmark learning rates and batch sizes, any number of epochs.
            surrogate: optional object with `predict(cfg) -> jax.Array` of 200-epoch test
                accuracy (%); evaluated once here for every stored row x the table's (lr, bs)
                pairs (each row's cell), taking precedence over the table's `avg_acc_200`.
            chunk: configs per `surrogate.predict` call.
        """
        if not isinstance(table, Table):
            table = load_table(table)
        if table.n_epochs < 1:
            raise ValueError("the table has no epochs")
        space = SearchSpace.from_table(table)
        table = _sorted_grid(table)  # lr / bs axes in increasing order, as space.lrs / bss
        m = {k: np.asarray(v, np.float64) for k, v in table.metrics.items()}
        tr, va, te = m["train_time"], m["valid_time"], m["test_time"]
        cost_valid = np.cumsum(tr, -1) + np.cumsum(va, -1)
        cost_test = cost_valid + np.cumsum(te, -1)
        if all(k in table.extra for k in _TOTALS):  # official totals for full queries
            tv = np.asarray(table.extra["total_trainval_time"], np.float64)
            cost_valid[..., -1] = tv
            cost_test[..., -1] = tv + np.asarray(table.extra["total_test_time"], np.float64)
        packed = np.stack([m["valid_acc"], m["test_acc"], m["valid_loss"], m["test_loss"],
                           cost_valid, cost_test], axis=-1).astype(np.float32)
        acc_200 = np.full(packed.shape[:3], np.nan, np.float32)
        has_200 = False
        if surrogate is not None:
            acc_200 = _predict_rows(surrogate, table.cells, space, chunk)
            has_200 = True
        elif AVG_ACC_200 in table.extra:
            acc_200 = np.asarray(table.extra[AVG_ACC_200], np.float32)
            has_200 = True
        self.packed = jnp.asarray(packed)
        self.acc_200 = jnp.asarray(acc_200)
        self.row_of_cell = jnp.asarray(table.row_of_cell, jnp.int32)
        self.cells = jnp.asarray(table.cells, jnp.int32)
        objectives = objective_tables(**scale_of_meta(table.meta))
        self.params_of_cell = jnp.asarray(objectives.params, jnp.int32)
        self.flops_of_cell = jnp.asarray(objectives.flops, jnp.int32)
        self.seeds = tuple(int(x) for x in table.seeds)
        self.official_seed = int(np.argmin(table.seeds))
        self.has_200 = has_200
        self.space = space

    def tree_flatten(self) -> tuple[tuple, tuple]:
        """Arrays as children, the seeds and flags as static aux data."""
        return (tuple(getattr(self, k) for k in self._CHILDREN),
                tuple(getattr(self, k) for k in self._STATIC))

    @classmethod
    def tree_unflatten(cls, aux: tuple, children: tuple) -> Benchmark:
        """Rebuilds a benchmark from `tree_flatten`'s output (no table needed)."""
        obj = object.__new__(cls)
        for k, v in zip(cls._CHILDREN + cls._STATIC, children + aux, strict=True):
            setattr(obj, k, v)
        return obj

    def __repr__(self) -> str:
        return (f"Benchmark(rows={self.packed.shape[0]}, seeds={self.seeds}, "
                f"epochs={self.packed.shape[4]}, has_200={self.has_200}, "
                f"space={self.space.describe()})")

    @property
    def n_epochs(self) -> int:
        """Epochs per stored run (12 for the benchmark)."""
        return self.packed.shape[4]

    # ------------------------------------------------------------------------- queries

    def query(self, cfgs: nhb2.Config, epoch: int | jax.Array | None = None,
              seed: str | int = "official", mode: str = "valid",
              key: jax.Array | None = None) -> QueryResult:
        """Queries a batch of configs (jittable; one fused gather).

        Args:
            cfgs: config(s), any batch shape.
            epoch: 1..n_epochs (int or int array broadcastable to the batch, may be traced):
                the values after that epoch of the 12-epoch (the table's n_epochs) run and the
                cost of training up to it; None: the full query (n_epochs, 12 for the
                benchmark); or the Python int 200 for the 200-epoch test accuracy (no cost).
            seed: "official" (the smallest seed, 222, as the official client and scripts),
                an int seed index, "random" (a uniform seed per config; needs `key`) or
                "mean" (NaN-aware mean over seeds of every value, cost included).
            mode: "valid" or "test": which cost is charged (test adds the test passes).
            key: PRNG key for seed="random".

        Returns:
            `QueryResult` of the batch shape (NaN for configs outside the table's space: a
            cell whose class, or an lr / batch size, is not stored; concrete configs raise),
            with the cells' parameter counts and FLOPs.
        """
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is invalid; valid choices: {list(MODES)}")
        self._check_seed(seed, key)
        if not isinstance(cfgs.cell, jax.core.Tracer):
            self._check_configs(cfgs)
        epoch = self.n_epochs if epoch is None else epoch
        index = nhb2.cell_index(cfgs.cell)
        rows = self.row_of_cell[index]
        shape = rows.shape
        objectives = dict(params=self.params_of_cell[index], flops=self.flops_of_cell[index])
        missing = rows < 0
        rows = jnp.maximum(rows, 0)
        lr, bs = cfgs.lr, cfgs.bs
        if not self.space.full_hps:  # full-grid indices -> the table's slots
            lr = jnp.asarray(self.space.lr_slot)[lr]
            bs = jnp.asarray(self.space.bs_slot)[bs]
            missing = missing | (lr < 0) | (bs < 0)
            lr, bs = jnp.maximum(lr, 0), jnp.maximum(bs, 0)
        if isinstance(epoch, int) and epoch == 200:
            v = jnp.where(missing, jnp.nan, self.acc_200[rows, lr, bs])
            nan = jnp.full(shape, jnp.nan, jnp.float32)
            return QueryResult(valid_acc=nan, test_acc=v, valid_loss=nan, test_loss=nan,
                               cost=jnp.zeros(shape, jnp.float32), **objectives)
        self._check_epoch(epoch)
        e = jnp.broadcast_to(jnp.asarray(epoch, jnp.int32) - 1, shape)
        n_lrs, n_bss, n_seeds, n_epochs = self.packed.shape[1:5]
        flat = self.packed.reshape(-1, len(FIELDS))  # one 1-D gather of contiguous records
        base = ((rows * n_lrs + lr) * n_bss + bs) * n_seeds
        if seed == "mean":
            s = jnp.arange(n_seeds, dtype=jnp.int32)
            rec = flat[((base[..., None] + s) * n_epochs + e[..., None])]  # [..., seeds, f]
            rec = jnp.nanmean(rec, axis=-2)
        else:
            if seed == "random":
                s = jax.random.randint(key, shape, 0, n_seeds)
            else:
                s = self.official_seed if seed == "official" else seed
            rec = flat[(base + s) * n_epochs + e]
        rec = jnp.where(missing[..., None], jnp.nan, rec)
        cost = rec[..., 4] if mode == "valid" else rec[..., 5]
        return QueryResult(valid_acc=rec[..., 0], test_acc=rec[..., 1], valid_loss=rec[..., 2],
                           test_loss=rec[..., 3], cost=cost, **objectives)

    def acc200(self, cfgs: nhb2.Config) -> jax.Array:
        """The 200-epoch test accuracy of configs (NaN where unavailable); jittable."""
        return self.query(cfgs, epoch=200).test_acc

    # ------------------------------------------------------------------------- oracle

    def best(self, metric: str = "valid", seed: str | int = "mean",
             epoch: int | None = None) -> tuple[nhb2.Config, float]:
        """The best stored config by one metric (host-side; for regret and tests).

        Args:
            metric: "valid" or "test" accuracy at `epoch`, or "200" (the 200-epoch value).
            seed: "official", an int seed index, or "mean" (NaN-aware mean over seeds).
            epoch: 1..n_epochs (None: the last; ignored for metric "200").

        Returns:
            (config of the table row's cell, its value; lr / bs as full-grid indices). Ties
            go to the first in row, lr, bs order.
        """
        if metric not in ("valid", "test", "200"):
            raise ValueError(f"metric {metric!r} is invalid; valid choices: "
                             "['valid', 'test', '200']")
        if metric == "200":
            if not self.has_200:
                raise ValueError("this benchmark has no 200-epoch values (no avg_acc_200 in "
                                 "the table and no surrogate attached)")
            score = np.asarray(self.acc_200)
        else:
            if seed == "random":
                raise ValueError("best() needs a deterministic seed: 'official', 'mean' or "
                                 "an int index")
            self._check_seed(seed, None)
            epoch = self.n_epochs if epoch is None else epoch
            self._check_epoch(epoch)
            field = np.asarray(self.packed[..., epoch - 1, FIELDS.index(f"{metric}_acc")])
            if seed == "mean":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    score = np.nanmean(field, axis=-1)
            else:
                s = self.official_seed if seed == "official" else seed
                score = field[..., s]
        if not np.isfinite(score).any():
            raise ValueError("the table has no finite values for this metric")
        row, lr, bs = np.unravel_index(int(np.nanargmax(score)), score.shape)
        cfg = nhb2.make(nhb2.cell_from_index(int(self.cells[row])), self.space.lrs[lr],
                        self.space.bss[bs])
        return cfg, float(score[row, lr, bs])

    def min_cost(self, epoch: int | None = None, seed: str | int = "official") -> float:
        """The cheapest finite query cost at `epoch` (None: the last) in 'valid' mode (for
        sizing buffers)."""
        c = self._costs(self.n_epochs if epoch is None else epoch, seed)
        c = c[np.isfinite(c) & (c > 0)]
        if not c.size:
            raise ValueError("the table has no positive finite costs")
        return float(c.min())

    def mean_cost(self, epoch: int | None = None, seed: str | int = "official") -> float:
        """The mean finite query cost in 'valid' mode over the stored (row, lr, bs) entries.

        Args:
            epoch: 1..n_epochs (default: the last, a full query of the table's protocol).
            seed: "official", "mean", "random" (the mean over seeds) or an int seed index.

        Returns:
            Seconds.
        """
        c = self._costs(self.n_epochs if epoch is None else epoch,
                        "mean" if seed == "random" else seed)
        c = c[np.isfinite(c)]
        if not c.size:
            raise ValueError("the table has no finite costs")
        return float(c.astype(np.float64).mean())

    def _costs(self, epoch: int, seed: str | int) -> np.ndarray:
        self._check_epoch(epoch)
        c = np.asarray(self.packed[..., epoch - 1, 4])
        if seed in ("mean", "random"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                c = np.nanmean(c, -1) if seed == "mean" else np.nanmin(c, -1)
        else:
            self._check_seed(seed, None)
            c = c[..., self.official_seed if seed == "official" else seed]
        return c

    # ------------------------------------------------------------------------- checks

    def _check_seed(self, seed: Any, key: jax.Array | None) -> None:
        if isinstance(seed, str):
            if seed not in SEED_CHOICES[:3]:
                raise ValueError(f"seed {seed!r} is invalid; valid choices: {list(SEED_CHOICES)}"
                                 f" (seed indices 0..{len(self.seeds) - 1} for {self.seeds})")
            if seed == "random" and key is None:
                raise ValueError("seed='random' needs a PRNG key: query(..., key=key)")
        elif isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            if not 0 <= seed < len(self.seeds):
                raise ValueError(f"seed index {seed} is out of range; valid choices: "
                                 f"{list(SEED_CHOICES[:3])} or 0..{len(self.seeds) - 1} "
                                 f"(seeds {self.seeds})")
        else:
            raise ValueError(f"seed {seed!r} is invalid; valid choices: {list(SEED_CHOICES)}")

    def _check_epoch(self, epoch: Any) -> None:
        if isinstance(epoch, jax.core.Tracer):
            return
        e = np.asarray(epoch)
        if not np.issubdtype(e.dtype, np.integer) or (e.size and (
                e.min() < 1 or e.max() > self.n_epochs)):
            raise ValueError(f"epoch {epoch!r} is invalid; valid choices: integers 1.."
                             f"{self.n_epochs} (partial/full 12-epoch queries) or 200")

    def _check_configs(self, cfgs: nhb2.Config) -> None:
        nhb2.validate(cfgs)
        sp = self.space
        rows = np.asarray(self.row_of_cell)[np.asarray(nhb2.cell_index(cfgs.cell))]
        if (rows < 0).any():
            bad = np.asarray(nhb2.cell_index(cfgs.cell)).reshape(-1)[
                np.argmax((rows < 0).reshape(-1))]
            code = nhb2.to_string(nhb2.make(nhb2.cell_from_index(int(bad)), 0, 0))
            raise ValueError(f"cell {code} (index {int(bad)}) is not in this table: its "
                             f"class has no row ({sp.n_cells} of 4096 cells, {sp.n_classes} "
                             "classes are covered); inside jit such queries return NaN")
        for what, idx, slot, values, held in (
                ("learning rate", cfgs.lr, sp.lr_slot, nhb2.LRS, sp.lrs),
                ("batch size", cfgs.bs, sp.bs_slot, nhb2.BATCH_SIZES, sp.bss)):
            idx = np.asarray(idx).reshape(-1)
            absent = slot[idx] < 0
            if absent.any():
                i = int(idx[np.argmax(absent)])
                raise ValueError(f"{what} {values[i]} (index {i}) is not in this table, which "
                                 f"holds {[values[j] for j in held]} (indices {list(held)}); "
                                 "inside jit such queries return NaN")


def _sorted_grid(table: Table) -> Table:
    """The table with its lr and batch-size axes in increasing order (a no-op if they are)."""
    perm_lr, perm_bs = np.argsort(table.lrs), np.argsort(table.batch_sizes)
    if (np.diff(perm_lr) > 0).all() and (np.diff(perm_bs) > 0).all():
        return table
    take = lambda a: a[:, perm_lr][:, :, perm_bs] if a.ndim >= 3 else a
    return dataclasses.replace(
        table, metrics={k: take(v) for k, v in table.metrics.items()},
        diverged=take(table.diverged), lrs=tuple(np.asarray(table.lrs)[perm_lr].tolist()),
        batch_sizes=tuple(np.asarray(table.batch_sizes)[perm_bs].tolist()),
        extra={k: take(v) for k, v in table.extra.items()})


def _predict_rows(surrogate: SurrogateLike, cells: np.ndarray, space: SearchSpace,
                  chunk: int) -> np.ndarray:
    """Surrogate predictions [rows, lrs, bss] for every stored row x the table's (lr, bs)."""
    lrs, bss = np.asarray(space.lrs), np.asarray(space.bss)
    n_hps = len(lrs) * len(bss)
    n = len(cells) * n_hps
    idx = np.arange(n)
    row, hp = idx // n_hps, idx % n_hps
    out = np.empty(n, np.float32)
    for i in range(0, n, chunk):
        sl = slice(i, i + chunk)
        cfg = nhb2.make(nhb2.cell_from_index(cells[row[sl]]), lrs[hp[sl] // len(bss)],
                        bss[hp[sl] % len(bss)])
        out[sl] = np.asarray(surrogate.predict(cfg), np.float32).reshape(-1)
    return out.reshape(len(cells), len(lrs), len(bss))
