"""The 200-epoch surrogate's grouped cross-validation on a table, with its report files.

`run_surrogate_cv(table, output_dir, ...)` takes the seed-mean `metric` of every (cell, lr,
batch size) of the table (any sub-grid; `surrogate_cv.targets_from_table`), runs the paper's
architecture-grouped K-fold CV of the bagged GIN surrogate and the baselines
(`surrogate_cv.cross_validate`) and writes `report.json`, `scatter.png` and (optionally)
`surrogate.nhbs`. A table with fewer architecture classes than folds raises a ValueError
naming how many classes are present and needed, before any training.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time
from collections.abc import Sequence

import jax
import numpy as np

from nhb.bench import surrogate as sg
from nhb.bench import surrogate_cv as cv
from nhb.bench.fake import random_table
from nhb.bench.table import Table, atomic_write, code_version
from nhb.space import nhb2

PAPER_MEAN_TEST_R2 = 0.876
ISSUE_TARGET_R2 = 0.90
DEMOS = ("random", "synthetic")


def demo_table(seed: int = 0) -> Table:
    """The demo table of `--table=random|synthetic`: random values on the paper's 100 cells."""
    return random_table(seed, rows=cv.cells_200ep(), n_epochs=12)


def load_data(table: Table, cells: str = "auto", metric: str = "test_acc", epoch: int = -1,
              synthetic: bool = False, table_desc: str = "") -> tuple[nhb2.Config, np.ndarray,
                                                                       dict]:
    """CV data of a table.

    Args:
        table: the table.
        cells: "200ep", "all", "auto" (200ep if the table has them all, else all rows) or
            comma-separated official codes.
        metric: metric name (or an extra such as avg_acc_200).
        epoch: epoch index of the metric.
        synthetic: replace the targets by `surrogate_cv.synthetic_target` (a demo).
        table_desc: description of the table for the report.

    Returns:
        (cfgs, y, description dict).
    """
    c200 = cv.cells_200ep()
    if cells == "auto":
        cells = "200ep" if (table.row_of_cell[c200] >= 0).all() else "all"
    subset = (None if cells == "all" else c200 if cells == "200ep"
              else [c.strip() for c in cells.split(",") if c.strip()])
    cfgs, y = cv.targets_from_table(table, epoch=epoch, cells=subset, metric=metric)
    if synthetic:
        y = cv.synthetic_target(cfgs)
    real = not synthetic and table.meta.get("protocol") != "random"
    desc = dict(table=table_desc, table_meta=table.meta, cells=cells, metric=metric,
                epoch=epoch, table_epochs=table.n_epochs, lrs=list(table.lrs),
                batch_sizes=list(table.batch_sizes), real_data=real)
    if synthetic:
        desc["target"] = "surrogate_cv.synthetic_target (known function, not real data)"
    return cfgs, y, desc


def scatter(path: pathlib.Path, y: np.ndarray, predictions: dict[str, np.ndarray],
            report: dict) -> None:
    """Predicted-vs-true scatter, one panel per model, R^2 in the titles."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    names = list(predictions)
    fig = Figure(figsize=(4.2 * len(names), 4.2))
    axes = fig.subplots(1, len(names), squeeze=False)
    lo, hi = float(np.min(y)), float(np.max(y))
    for ax, m in zip(axes[0], names, strict=True):
        ax.scatter(y, predictions[m], s=3, alpha=0.4)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        r = report["models"][m]
        ax.set_title(f"{m}: R2 {r['mean_test_r2']:.3f}, tau {r['mean_test_kendall_tau']:.3f}")
        ax.set_xlabel("true")
        ax.set_ylabel("predicted (out of fold)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def run_surrogate_cv(table: Table, output_dir: str | pathlib.Path, cells: str = "auto",
                     metric: str = "test_acc", epoch: int = -1, folds: int = 5, seed: int = 0,
                     members: int = 10, epochs: int = sg.SurrogateConfig.epochs,
                     baselines: Sequence[str] = cv.BASELINES, save_surrogate: bool = True,
                     synthetic: bool = False, table_desc: str = "", log=print) -> dict:
    """Grouped K-fold CV of the surrogate on a table; writes report.json, scatter.png and
    surrogate.nhbs.

    Args:
        table: the table (any sub-grid).
        output_dir: output directory (created).
        cells: see `load_data`.
        metric: target metric.
        epoch: its epoch index (-1: last).
        folds: K (the table needs at least K architecture classes).
        seed: PRNG seed (folds, holdouts, training).
        members: bagging ensemble size.
        epochs: training epochs.
        baselines: subset of `surrogate_cv.BASELINES`.
        save_surrogate: write the ensemble of all folds' GIN models.
        synthetic: use `synthetic_target` instead of the table's values (demo).
        table_desc: the table's description for the report.
        log: progress printer (None: silent).

    Returns:
        The report dict.
    """
    bad = [b for b in baselines if b not in cv.BASELINES]
    if bad:
        raise ValueError(f"unknown baseline(s) {bad}; valid choices: {list(cv.BASELINES)}")
    cfgs, y, desc = load_data(table, cells, metric, epoch, synthetic, table_desc)
    n_classes = len(np.unique(np.asarray(nhb2.canonical(cfgs))))
    say = log or (lambda _: None)
    say(f"{len(y)} points, {n_classes} architecture classes, targets {y.min():.2f}..{y.max():.2f}"
        f" (mean {y.mean():.2f})")
    cv.check_cv_size(n_classes, folds)
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = sg.SurrogateConfig(num_members=members, epochs=epochs)
    t0 = time.perf_counter()
    res = cv.cross_validate(jax.random.key(seed), cfgs, y, config, n_folds=folds,
                            baselines=baselines, log=log)
    report = res["report"]
    report.update(
        data=desc, seconds=round(time.perf_counter() - t0, 1),
        paper_mean_test_r2=PAPER_MEAN_TEST_R2, issue_target_r2=ISSUE_TARGET_R2,
        code_version=code_version(), jax=jax.__version__, device=str(jax.devices()[0]),
        host=platform.node(), cpu_count=os.cpu_count())
    if not desc["real_data"]:
        report["note"] = ("not real data: the grouped-CV R^2 of the GIN surrogate on a real "
                          "table is still pending")
    scatter(out / "scatter.png", y, res["predictions"], report)
    if save_surrogate:
        final = sg.Surrogate.combine(res["surrogates"])
        final.info.update(data=desc, cv_mean_test_r2=report["models"]["gin"]["mean_test_r2"])
        final.save(out / "surrogate.nhbs")
    payload = json.dumps(report, indent=1, allow_nan=True).encode()
    atomic_write(out / "report.json", lambda f: f.write(payload))
    return report
