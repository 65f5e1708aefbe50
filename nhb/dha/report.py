"""After a DHA run: the trajectory figure and, for NHB-II cells, the score on a table.

`finish_report(result, output_dir, table=None)` draws the learned lr / weight decay and the
policy entropy per epoch (`trajectories.png`), scores a derived NAS-HPO-Bench-II cell on a
benchmark table when one is given (its 12-epoch test accuracy at every stored lr and batch
size, and where its best value ranks among the table's cells), and rewrites `summary.json`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from nhb._io import atomic_write_text
from nhb.dha.policy import MAX_ENTROPY
from nhb.dha.run import SUMMARY_FILE

FIGURE_FILE = "trajectories.png"


def trajectory_figure(summary: dict[str, Any]) -> Any:
    """A matplotlib Figure: lr, weight decay and policy entropy per epoch, phases marked."""
    from matplotlib.figure import Figure

    hist = summary["history"]
    epochs = np.arange(1, len(hist) + 1)
    n_search = summary["search_epochs_run"]
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    series = (("lr_trajectory", "learning rate"), ("wd_trajectory", "weight decay"),
              ("policy_entropy", "policy entropy (nats)"))
    for ax, (key, label) in zip(axes, series, strict=True):
        ax.plot(epochs, summary[key], marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if 0 < n_search < len(hist):
            ax.axvline(n_search + 0.5, color="grey", ls="--", lw=0.8)
            ax.text(n_search + 0.6, ax.get_ylim()[1], "retrain", va="top", fontsize=7)
    axes[2].axhline(MAX_ENTROPY, color="grey", ls=":", lw=0.8)
    fig.suptitle(f"{summary['paper_name']} on {summary['space']}: test acc "
                 f"{summary['test_acc']:.2f}%")
    return fig


def score_on_table(cell: str, table: Any) -> dict[str, Any]:
    """The derived cell's 12-epoch test accuracy on a NAS-HPO-Bench-II table.

    Args:
        cell: official code "A|BC|DEF".
        table: a `nhb.bench.Benchmark`, a `Table` or a table path.

    Returns:
        {"cell", "present": False} when the cell's class is not stored; else per stored
        (lr, batch size) the seed-mean test accuracy, the best of them, and the share of the
        table's cells whose best is lower ("percentile").
    """
    import jax.numpy as jnp

    from nhb.bench.api import Benchmark
    from nhb.space import nhb2

    bench = table if isinstance(table, Benchmark) else Benchmark(table)
    row = int(bench.row_of_cell[int(nhb2.cell_index(jnp.asarray(nhb2.cell_from_string(cell))))])
    if row < 0:
        return {"cell": cell, "present": False}
    grid, accs = _test_per_row(bench)
    best_per_row = np.nanmax(accs, axis=1)
    best = float(best_per_row[row])
    return {"cell": cell, "present": True,
            "test_acc_12": {f"lr={nhb2.LRS[lr]},bs={nhb2.BATCH_SIZES[bs]}": float(a)
                            for (lr, bs), a in zip(grid, accs[row], strict=True)},
            "best_test_acc_12": best,
            "percentile": float(np.mean(best_per_row < best) * 100.0)}


def _test_per_row(bench: Any) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The stored (lr, bs) index pairs and every table row's seed-mean 12-epoch test
    accuracy at each: one query of all rows (a cell reads its class's row)."""
    import jax.numpy as jnp

    from nhb.space import nhb2

    grid = [(lr, bs) for lr in bench.space.lrs for bs in bench.space.bss]
    rows, h = int(bench.cells.shape[0]), len(grid)
    cells = nhb2.cell_from_index(jnp.asarray(bench.cells))
    cfgs = nhb2.Config(cell=jnp.repeat(cells[:, None], h, axis=1),
                       lr=jnp.broadcast_to(jnp.asarray([g[0] for g in grid], jnp.int32),
                                           (rows, h)),
                       bs=jnp.broadcast_to(jnp.asarray([g[1] for g in grid], jnp.int32),
                                           (rows, h)))
    return grid, np.asarray(bench.query(cfgs, seed="mean", mode="test").test_acc, np.float64)


def finish_report(result: Any, output_dir: str | os.PathLike | None,
                  table: Any = None) -> dict[str, Any]:
    """Adds the figure (and the table score) to a `DHAResult`'s summary and saves it.

    Args:
        result: `nhb.dha.run.DHAResult`.
        output_dir: where `summary.json` and the figure go (None: nothing is written).
        table: optional NAS-HPO-Bench-II table (path or object) for an "nhb2" cell.

    Returns:
        The summary (also in `result.summary`).
    """
    summary = result.summary
    if table is not None:
        if summary["space"] != "nhb2":
            raise ValueError("a NAS-HPO-Bench-II table scores only --space=nhb2 cells")
        summary["table_score"] = score_on_table(summary["cell"], table)
    if output_dir is not None:
        out = pathlib.Path(output_dir)
        fig = trajectory_figure(summary)
        fig.savefig(out / FIGURE_FILE, dpi=110)
        summary["figures"] = [FIGURE_FILE]
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1))
    return summary
