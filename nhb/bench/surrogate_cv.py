"""Surrogate training data, metrics and the paper's architecture-grouped cross-validation.

Protocol (NAS-HPO-Bench-II §3.3): 5 folds split by architecture (equivalence class, so no
architecture is in two folds); in each fold 20 % of the training points (whole architectures)
are held out for early stopping on R^2; the test metrics of the fold's held-out architectures
are reported, and their mean over folds. Models compared on the same folds: the bagged GIN
surrogate, the bagged one-hot MLP (same training), and scikit-learn's
`GradientBoostingRegressor` on one-hot features (JAHS-Bench-201's surrogate family), whose
number of trees is early-stopped on the same held-out 20 %.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from nhb._vendor import load_npz
from nhb.bench.subspace import grid_index
from nhb.bench.surrogate import (
    Surrogate,
    SurrogateConfig,
    fit_indices,
    group_split,
    prepare,
)
from nhb.bench.table import AVG_ACC_200, METRICS, Table
from nhb.space import cells as _cells
from nhb.space import nhb2

BASELINES = ("mlp", "gbr")


# ----------------------------------------------------------------------------- data


def cells_200ep() -> np.ndarray:
    """Cell indices (0..4095) of the paper's 100 cells trained for 200 epochs."""
    codes = load_npz(_cells._NPZ)["cells_200ep"]
    index = {c: i for i, c in enumerate(_cells.cell_tables().codes)}
    return np.array([index[str(c)] for c in codes], np.int32)


def targets_from_table(table: Table, epoch: int = -1, cells: Sequence | None = None,
                       metric: str = "test_acc") -> tuple[nhb2.Config, np.ndarray]:
    """Surrogate training data from a table: the seed-mean metric of every (cell, lr, bs).

    Args:
        table: the table.
        epoch: epoch index (-1: the last) for a metric in `METRICS`.
        cells: subset of cells as official codes ("A|BC|DEF") or cell indices; a cell that is
            not stored is served by the stored row of its class. Default: every row. The
            paper's 200-epoch cells are `cells_200ep()`.
        metric: a name in `METRICS` (seed mean at `epoch`), or an extra array of shape
            [rows, lrs, bss] such as "avg_acc_200".

    Returns:
        (cfgs, y): a 1-D config batch (per cell, lr-major then batch size, over the table's
        own lrs and batch sizes, as full-grid indices) and float32 targets; points whose
        target is not finite are dropped.
    """
    lr_idx = [grid_index(v, nhb2.LRS, "learning rate") for v in table.lrs]  # table order
    bs_idx = [grid_index(v, nhb2.BATCH_SIZES, "batch size") for v in table.batch_sizes]
    hp_shape = (len(lr_idx), len(bs_idx))
    if metric in METRICS:
        values = table.seed_mean(metric, epoch)
    elif metric in table.extra and table.extra[metric].shape[1:] == hp_shape:
        values = np.asarray(table.extra[metric], np.float32)
    else:
        extra = [k for k, v in table.extra.items() if v.shape[1:] == hp_shape]
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS} or {extra} "
                         f"({AVG_ACC_200!r} holds the official 200-epoch values)")
    cell_idx = (np.asarray(table.cells, np.int32) if cells is None
                else np.array([_cell_index(c) for c in cells], np.int32).reshape(-1))
    rows = table.row_of_cell[cell_idx]
    if (rows < 0).any():
        missing = [_cells.cell_tables().codes[c] for c in cell_idx[rows < 0][:5]]
        raise ValueError(f"{int((rows < 0).sum())} cells have no row (nor a row of their class) "
                         f"in the table, e.g. {missing}")
    n = len(cell_idx)
    lr, bs = np.meshgrid(np.asarray(lr_idx), np.asarray(bs_idx), indexing="ij")
    cfgs = nhb2.make(nhb2.cell_from_index(np.repeat(cell_idx, lr.size)),
                     np.tile(lr.reshape(-1), n), np.tile(bs.reshape(-1), n))
    y = np.asarray(values[rows], np.float32).reshape(-1)
    keep = np.isfinite(y)
    if not keep.all():
        cfgs = jax.tree.map(lambda x: x[keep], cfgs)
    return cfgs, y[keep]


def _cell_index(cell) -> int:
    if isinstance(cell, str):
        return int(nhb2.cell_index(nhb2.cell_from_string(cell)))
    c = int(cell)
    if not 0 <= c < nhb2.NUM_CELLS:
        raise ValueError(f"cell index {c} is not in 0..{nhb2.NUM_CELLS - 1}")
    return c


def synthetic_target(cfgs: nhb2.Config) -> np.ndarray:
    """A known target for tests and demos: a function of the compressed graph and (lr, bs).

    y = clip(50 + 8 c - 0.8 c^2 - 2.5 p - 0.8 d^2 + 0.5 c [lr index >= 4], 10, 100), with
    c / p the number of conv / pool vertices of the compressed cell graph and d = lr index -
    batch-size index - 2 (distance from a linear-scaling-rule diagonal); cells without an
    input -> output path score 10.

    Args:
        cfgs: configs of any batch shape.

    Returns:
        float32 targets of shape `cfgs.shape`.
    """
    t = _cells.cell_tables()
    idx = np.asarray(nhb2.cell_index(cfgs.cell))
    labels = t.node_labels[idx]
    c = (labels == 2).sum(-1).astype(np.float32)
    p = (labels == 3).sum(-1).astype(np.float32)
    lr, bs = np.asarray(cfgs.lr), np.asarray(cfgs.bs)
    d = (lr - bs - 2).astype(np.float32)
    y = np.clip(50 + 8 * c - 0.8 * c**2 - 2.5 * p - 0.8 * d**2 + 0.5 * c * (lr >= 4), 10, 100)
    return np.where(t.disconnected[idx], 10.0, y).astype(np.float32)


# ----------------------------------------------------------------------------- metrics


def r2_score(y: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    return float(1.0 - ((y - p) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-300))


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as `scipy.stats.rankdata`)."""
    a = np.asarray(a).reshape(-1)
    order = np.argsort(a, kind="mergesort")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(a))
    s = a[order]
    new = np.concatenate([[True], s[1:] != s[:-1]])
    dense = np.cumsum(new)[inv]
    bounds = np.concatenate([np.nonzero(new)[0], [len(a)]])
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(y: np.ndarray, p: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    return float(np.corrcoef(rankdata(y), rankdata(p))[0, 1])


def kendall_tau(y: np.ndarray, p: np.ndarray, chunk: int = 1024) -> float:
    """Kendall's tau-b (ties corrected, as `scipy.stats.kendalltau`); O(n^2) in row chunks."""
    y, p = np.asarray(y, np.float64).reshape(-1), np.asarray(p, np.float64).reshape(-1)
    n = len(y)
    s, chunk = 0, max(1, min(chunk, 4_000_000 // max(n, 1)))  # bound the [chunk, n] buffers
    for i in range(0, n, chunk):
        sy = np.sign(y[i:i + chunk, None] - y[None]).astype(np.int8)
        sp = np.sign(p[i:i + chunk, None] - p[None]).astype(np.int8)
        s += int(np.einsum("ij,ij->", sy, sp, dtype=np.int64))
    ties = lambda a: float(sum(t * (t - 1) / 2 for t in np.unique(a, return_counts=True)[1]))
    n0 = n * (n - 1) / 2
    denom = np.sqrt((n0 - ties(y)) * (n0 - ties(p)))
    return float(s / 2 / denom) if denom > 0 else float("nan")


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """R^2, Kendall tau-b, Spearman rho, RMSE and MAE of predictions `p` for targets `y`."""
    y, p = np.asarray(y, np.float64).reshape(-1), np.asarray(p, np.float64).reshape(-1)
    return dict(r2=r2_score(y, p), kendall_tau=kendall_tau(y, p), spearman=spearman(y, p),
                rmse=float(np.sqrt(((y - p) ** 2).mean())), mae=float(np.abs(y - p).mean()))


# ----------------------------------------------------------------------------- folds


def group_kfold(key: jax.Array, groups: np.ndarray, n_folds: int = 5) -> np.ndarray:
    """Assigns every point to one of `n_folds` folds by whole groups (architecture classes).

    Groups are visited in random order (largest first, ties random) and each goes to the
    currently smallest fold, so fold sizes are balanced and no group spans two folds.

    Args:
        key: PRNG key.
        groups: [P] group label of every point.
        n_folds: number of folds (<= number of groups).

    Returns:
        int32 [P] fold index of every point.
    """
    uniq, inverse, counts = np.unique(np.asarray(groups), return_inverse=True,
                                      return_counts=True)
    check_cv_size(len(uniq), n_folds)
    order = np.asarray(jax.random.permutation(key, len(uniq)))
    order = order[np.argsort(-counts[order], kind="stable")]
    size = np.zeros(n_folds, np.int64)
    fold_of_group = np.zeros(len(uniq), np.int32)
    for g in order:
        f = int(np.argmin(size))
        fold_of_group[g] = f
        size[f] += counts[g]
    return fold_of_group[inverse.reshape(-1)]


def check_cv_size(n_classes: int, n_folds: int) -> None:
    """Raises a ValueError unless grouped K-fold CV is possible: 2 <= K <= classes.

    Args:
        n_classes: architecture classes present in the data.
        n_folds: K.
    """
    if n_folds < 2:
        raise ValueError(f"grouped cross-validation needs at least 2 folds, got {n_folds}")
    if n_classes < n_folds:
        hint = f" or fewer folds (--folds <= {n_classes})" if n_classes >= 2 else ""
        raise ValueError(
            f"too few architectures for grouped {n_folds}-fold cross-validation: the data has "
            f"{n_classes} architecture class(es) but needs at least {n_folds} (one per fold; "
            f"folds are split by class); use a table with more classes{hint}")


def cv_splits(key: jax.Array, groups: np.ndarray, n_folds: int = 5,
              valid_fraction: float = 0.2) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The paper's grouped CV splits: per fold (train, valid, test) point indices.

    Args:
        key: PRNG key.
        groups: [P] architecture class of every point.
        n_folds: number of folds.
        valid_fraction: fraction of each training fold (whole groups) for early stopping.

    Returns:
        One (train, valid, test) triple per fold; the three never share a group and the test
        sets partition the points.
    """
    groups = np.asarray(groups)
    k_fold, k_valid = jax.random.split(key)
    fold = group_kfold(k_fold, groups, n_folds)
    out = []
    for f, k in enumerate(jax.random.split(k_valid, n_folds)):
        test, rest = np.nonzero(fold == f)[0], np.nonzero(fold != f)[0]
        tr, va = group_split(k, groups[rest], valid_fraction)
        out.append((rest[tr], rest[va], test))
    return out


# ----------------------------------------------------------------------------- CV


def gbr_predict(x: np.ndarray, y: np.ndarray, train: np.ndarray, valid: np.ndarray,
                seed: int = 0, n_estimators: int = 500, learning_rate: float = 0.05,
                max_depth: int = 4) -> tuple[np.ndarray, int]:
    """Gradient-boosted trees on features `x`, the number of trees early-stopped on `valid`.

    Args:
        x: features [P, d].
        y: targets [P].
        train: training indices.
        valid: early-stopping indices (if empty, all trees are kept).
        seed: `random_state`.
        n_estimators: maximum number of trees.
        learning_rate: shrinkage.
        max_depth: tree depth.

    Returns:
        (predictions for all P points with the selected number of trees, that number).
    """
    from sklearn.ensemble import GradientBoostingRegressor

    gbr = GradientBoostingRegressor(n_estimators=n_estimators, learning_rate=learning_rate,
                                    max_depth=max_depth, random_state=seed)
    gbr.fit(x[train], y[train])
    best = n_estimators
    if len(valid):
        scores = [r2_score(y[valid], p) for p in gbr.staged_predict(x[valid])]
        best = int(np.argmax(scores)) + 1
    *_, pred = (p for _, p in zip(range(best), gbr.staged_predict(x), strict=False))
    return pred, best


def cross_validate(key: jax.Array, cfgs: nhb2.Config, targets: np.ndarray,
                   config: SurrogateConfig | None = None, n_folds: int = 5,
                   baselines: Sequence[str] = BASELINES,
                   log: Callable[[str], None] | None = print) -> dict:
    """Architecture-grouped K-fold CV of the GIN surrogate and baselines on the same folds.

    Args:
        key: PRNG key (folds, holdouts, training).
        cfgs: 1-D batch of configs.
        targets: [P] finite targets.
        config: GIN surrogate config (`model="gin"`; default `SurrogateConfig()`); the "mlp"
            baseline uses the same config with `model="mlp"`.
        n_folds: number of folds (paper: 5).
        baselines: subset of ("mlp", "gbr").
        log: progress printer (None for silence).

    Returns:
        Dict: `report` (JSON-serialisable: per model the mean/std test metrics over folds and the
        per-fold metrics, fold sizes, times), `predictions` (model -> out-of-fold predictions
        [P]), `targets` [P], `fold` [P], and `surrogates` (the GIN ensemble of each fold; the
        paper's final surrogate is `Surrogate.combine` of them).
    """
    config = SurrogateConfig() if config is None else config
    y = np.asarray(targets, np.float32).reshape(-1)
    if not np.isfinite(y).all():
        raise ValueError("targets must be finite")
    unknown = set(baselines) - set(BASELINES)
    if unknown or config.model != "gin":
        raise ValueError(f"config.model must be 'gin' and baselines a subset of {BASELINES}")
    data = prepare(cfgs)
    groups = data.class_of_point
    check_cv_size(len(np.unique(groups)), n_folds)
    k_split, k_fit = jax.random.split(key)
    splits = cv_splits(k_split, groups, n_folds, config.valid_fraction)
    t_max = max(len(s[0]) for s in splits)
    v_max = max(len(s[1]) for s in splits)
    names = ["gin", *baselines]
    preds = {m: np.full(len(y), np.nan, np.float32) for m in names}
    folds = {m: [] for m in names}
    fold = np.zeros(len(y), np.int32)
    surrogates = []
    onehot = np.asarray(data.onehot)
    for f, ((tr, va, te), k) in enumerate(zip(splits, jax.random.split(k_fit, n_folds),
                                              strict=True)):
        fold[te] = f
        for m in names:
            t0 = time.perf_counter()
            extra = {}
            if m == "gbr":
                p, extra["n_trees"] = gbr_predict(onehot, y, tr, va, seed=f)
            else:
                cfg = config if m == "gin" else dataclasses.replace(config, model="mlp")
                res = fit_indices(k, data, y, tr, va, cfg, train_size=t_max, val_size=v_max)
                p = np.asarray(res["pred"]).mean(axis=0)
                extra = dict(best_epoch=np.asarray(res["best_epoch"]).tolist(),
                             valid_r2=float(np.mean(np.asarray(res["best_r2"]))))
                if m == "gin":
                    surrogates.append(Surrogate(cfg, res["params"], res["y_mean"],
                                                res["y_std"], dict(fold=f, **extra)))
            preds[m][te] = p[te]
            metrics = regression_metrics(y[te], p[te])
            folds[m].append(dict(fold=f, n_train=len(tr), n_valid=len(va), n_test=len(te),
                                 seconds=round(time.perf_counter() - t0, 2), **metrics, **extra))
            if log:
                log(f"fold {f} {m:>4}: test R2 {metrics['r2']:.4f} tau "
                    f"{metrics['kendall_tau']:.4f} ({folds[m][-1]['seconds']:.1f} s)")
    report = dict(n_points=len(y), n_classes=len(np.unique(groups)), n_folds=n_folds,
                  config=config.to_dict(), models={})
    for m in names:
        summary = {}
        for name in ("r2", "kendall_tau", "spearman", "rmse", "mae"):
            v = np.array([r[name] for r in folds[m]])
            summary[f"mean_test_{name}"] = float(v.mean())
            summary[f"std_test_{name}"] = float(v.std())
        report["models"][m] = dict(**summary, folds=folds[m])
    return dict(report=report, predictions=preds, targets=y, fold=fold, surrogates=surrogates)
