r"""Architecture-grouped cross-validation of the NAS-HPO-Bench-II 200-epoch surrogate (paper §3.3).

    python experiments/nhb2_surrogate.py --table=PATH --output_dir=DIR [--cells=200ep|all|CODES]

Targets: the seed-mean `--metric` at `--epoch` of every (cell, lr, batch size) of the table's
cells (`nhb.bench.surrogate_cv.targets_from_table`); by default the paper's 100 `cells_200ep`
if the table has them all, else every row. Runs the paper's protocol (5 folds split by
architecture class, 20 % of each training fold held out by architecture for early stopping on
R^2) for the bagged GIN surrogate and, on the same folds, the bagged one-hot MLP and
scikit-learn's GradientBoostingRegressor. Writes

* `DIR/report.json`: mean/std test R^2, Kendall tau, Spearman, RMSE, MAE over folds for every
  model, the per-fold metrics, data and timing information;
* `DIR/scatter.png`: out-of-fold predicted vs true targets, one panel per model;
* `DIR/surrogate.nhbs` (unless `--nosave_surrogate`): the paper's final surrogate, the
  ensemble of the GIN models of all folds (`Surrogate.load` reads it back).

`--table=random` uses `nhb.bench.random_table` (targets without structure: expect R^2 ~ 0);
`--table=synthetic` the same configs with `surrogate_cv.synthetic_target` (a known function
of the compressed cell graph and lr/bs). Neither is real data.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import time

import jax
import numpy as np
from absl import app, flags

from nhb.bench import surrogate as sg
from nhb.bench import surrogate_cv as cv
from nhb.bench.fake import random_table
from nhb.bench.table import Table, atomic_write, code_version, load_table
from nhb.space import nhb2

_TABLE = flags.DEFINE_string("table", None, "Table file, or 'random' / 'synthetic' (demos).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for report.json and plots.")
_CELLS = flags.DEFINE_string("cells", "auto", "'200ep', 'all', 'auto' (200ep if present, else "
                             "all rows) or comma-separated official codes.")
_METRIC = flags.DEFINE_string("metric", "test_acc", "Table metric (or extra, e.g. avg_acc_200).")
_EPOCH = flags.DEFINE_integer("epoch", -1, "Epoch index of the metric (-1: last).")
_FOLDS = flags.DEFINE_integer("folds", 5, "Number of architecture-grouped folds.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed (folds, holdouts, training).")
_MEMBERS = flags.DEFINE_integer("members", 10, "Bagging ensemble size.")
_EPOCHS = flags.DEFINE_integer("epochs", sg.SurrogateConfig.epochs, "Training epochs.")
_BASELINES = flags.DEFINE_list("baselines", list(cv.BASELINES), "Subset of mlp,gbr.")
_SAVE = flags.DEFINE_bool("save_surrogate", True, "Write DIR/surrogate.nhbs (all folds).")

PAPER_MEAN_TEST_R2 = 0.876
ISSUE_TARGET_R2 = 0.90


def load_data(spec: str, cells: str, metric: str, epoch: int, seed: int
              ) -> tuple[nhb2.Config, np.ndarray, dict]:
    """Targets for the CV from a table file or a demo table.

    Args:
        spec: table path, "random" or "synthetic".
        cells: "200ep", "all", "auto" or comma-separated official codes.
        metric: metric name.
        epoch: epoch index.
        seed: seed of the demo tables.

    Returns:
        (cfgs, y, description dict).
    """
    demo = spec in ("random", "synthetic")
    table: Table = (random_table(seed, rows=cv.cells_200ep(), n_epochs=12) if demo
                    else load_table(spec))
    c200 = cv.cells_200ep()
    if cells == "auto":
        cells = "200ep" if (table.row_of_cell[c200] >= 0).all() else "all"
    subset = (None if cells == "all" else c200 if cells == "200ep"
              else [c.strip() for c in cells.split(",") if c.strip()])
    cfgs, y = cv.targets_from_table(table, epoch=epoch, cells=subset, metric=metric)
    if spec == "synthetic":
        y = cv.synthetic_target(cfgs)
    desc = dict(table=spec, table_meta=table.meta, cells=cells, metric=metric, epoch=epoch,
                table_epochs=table.n_epochs, real_data=not demo and table.meta.get(
                    "protocol") != "random")
    if spec == "synthetic":
        desc["target"] = "surrogate_cv.synthetic_target (known function, not real data)"
    return cfgs, y, desc


def scatter(path: pathlib.Path, y: np.ndarray, predictions: dict[str, np.ndarray],
            report: dict) -> None:
    """Predicted-vs-true scatter, one panel per model, R^2 in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(predictions)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
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
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str]) -> None:
    del argv
    if not _TABLE.value or not _OUTPUT_DIR.value:
        raise app.UsageError("--table and --output_dir are required")
    out = pathlib.Path(_OUTPUT_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    cfgs, y, desc = load_data(_TABLE.value, _CELLS.value, _METRIC.value, _EPOCH.value,
                              _SEED.value)
    print(f"{len(y)} points, {len(np.unique(np.asarray(nhb2.canonical(cfgs))))} architecture "
          f"classes, targets {y.min():.2f}..{y.max():.2f} (mean {y.mean():.2f})")
    config = sg.SurrogateConfig(num_members=_MEMBERS.value, epochs=_EPOCHS.value)
    t0 = time.perf_counter()
    res = cv.cross_validate(jax.random.key(_SEED.value), cfgs, y, config, n_folds=_FOLDS.value,
                            baselines=_BASELINES.value)
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
    if _SAVE.value:
        final = sg.Surrogate.combine(res["surrogates"])
        final.info.update(data=desc, cv_mean_test_r2=report["models"]["gin"]["mean_test_r2"])
        final.save(out / "surrogate.nhbs")
    payload = json.dumps(report, indent=1, allow_nan=True).encode()
    atomic_write(out / "report.json", lambda f: f.write(payload))
    print("\nmodel   mean test R2   Kendall tau   Spearman")
    for m, r in report["models"].items():
        print(f"{m:<6} {r['mean_test_r2']:8.4f} +- {r['std_test_r2']:.4f} "
              f"{r['mean_test_kendall_tau']:9.4f} {r['mean_test_spearman']:10.4f}")
    print(f"(paper: GIN mean test R2 {PAPER_MEAN_TEST_R2}; issue target >= {ISSUE_TARGET_R2} on "
          f"real data)\nwrote {out / 'report.json'}, {out / 'scatter.png'}"
          + (f", {out / 'surrogate.nhbs'}" if _SAVE.value else ""))


if __name__ == "__main__":
    app.run(main)
