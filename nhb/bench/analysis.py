"""NAS-HPO-Bench-II analysis figures (paper §4) for any table, sub-grids included.

`write_figures(table, out_dir)` writes (final epoch, mean over seeds unless said otherwise;
axes are the table's own learning rates and batch sizes):

- `fig3_hparams.png`: left, the lr x batch-size heatmap of the mean test accuracy over all
  stored architectures; right, the scaling-rule groups: settings with the same ratio
  r = batch size / lr (the heatmap's diagonals), mean test accuracy vs batch size per ratio.
- `fig4_seed_spread.png`: histogram of max - min test accuracy over the seeds of each
  (architecture, lr, bs) (needs >= 2 seeds), with the share above 1 %.
- `fig5_groups.png`: left, per architecture the mean test accuracy over the settings of each
  ratio, colored by architecture group (`nhb.space.cells` groups 1-3); right, each group's
  mean vs the ratio (top) and the difference between consecutive ratios (bottom; a(2r) - a(r)
  on the full grid).
- `analysis.json`: the numbers behind the figures.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

from nhb.bench.table import Table
from nhb.space import cells as _cells
from nhb.space import nhb2

GROUPS = (1, 2, 3)


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def ratio_groups(lrs=nhb2.LRS, batch_sizes=nhb2.BATCH_SIZES) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ratios r = bs / lr (sorted) and each (lr, bs) setting's ratio index."""
    r = np.asarray(batch_sizes, np.float64)[None, :] / np.asarray(lrs, np.float64)[:, None]
    ratios = np.unique(np.round(r, 6))
    return ratios, np.searchsorted(ratios, np.round(r, 6))


def per_ratio(acc: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Mean over the settings of each ratio: acc [..., lrs, bss] -> [..., n ratios]."""
    out = np.full((*acc.shape[:-2], n), np.nan)
    for k in range(n):
        out[..., k] = _nanmean(acc[..., index == k], -1)
    return out


def analyse(table: Table) -> dict:
    """All numbers of Figures 3-5.

    Args:
        table: any table (its lrs / batch sizes are the axes).

    Returns:
        Dict: heatmap [lrs, bss], ratios, ratio_index [lrs, bss], arch_ratio [rows, ratios],
        groups [rows], group_ratio {group: [ratios]}, seed_spread (with >= 2 seeds).
    """
    test = table.seed_mean("test_acc")  # [rows, lrs, bss]
    ratios, index = ratio_groups(table.lrs, table.batch_sizes)
    groups = _cells.cell_tables().group[table.cells]
    arch_ratio = per_ratio(test, index, len(ratios))  # [rows, ratios]
    out = dict(heatmap=_nanmean(test, 0), ratios=ratios, ratio_index=index,
               arch_ratio=arch_ratio, groups=groups,
               group_ratio={g: _nanmean(arch_ratio[groups == g], 0) for g in GROUPS
                            if (groups == g).any()})
    if table.n_seeds >= 2:
        final = table.metrics["test_acc"][..., -1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanmax(final, -1) - np.nanmin(final, -1)
        out["seed_spread"] = spread[np.isfinite(spread)].ravel()
    return out


def plot_fig3(a: dict, table: Table, path: pathlib.Path) -> None:
    """lr x batch-size heatmap and the scaling-rule curves."""
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    im = ax.imshow(a["heatmap"], cmap="viridis", origin="lower", aspect="auto")
    for i in range(a["heatmap"].shape[0]):
        for j in range(a["heatmap"].shape[1]):
            ax.text(j, i, f"{a['heatmap'][i, j]:.1f}", ha="center", va="center", fontsize=7,
                    color="w")
    ax.set_xticks(range(len(table.batch_sizes)), table.batch_sizes)
    ax.set_yticks(range(len(table.lrs)), [f"{v:g}" for v in table.lrs])
    ax.set_xlabel("batch size")
    ax.set_ylabel("learning rate")
    ax.set_title(f"mean test accuracy (%), {table.n_rows} archs, {table.n_epochs} epochs")
    fig.colorbar(im, ax=ax)
    bss = np.asarray(table.batch_sizes)
    for k, r in enumerate(a["ratios"]):
        cols = np.nonzero((a["ratio_index"] == k).any(0))[0]
        rows = [np.nonzero(a["ratio_index"][:, j] == k)[0][0] for j in cols]
        if len(cols) > 1:
            bx.plot(bss[cols], a["heatmap"][rows, cols], marker="o", label=f"r={r:g}")
    bx.set_xscale("log", base=2)
    bx.set_xlabel("batch size")
    bx.set_ylabel("mean test accuracy (%)")
    bx.set_title("scaling rule: settings with equal batch size / lr")
    if bx.get_legend_handles_labels()[0]:
        bx.legend(fontsize=6, ncol=2)
    else:
        bx.text(0.5, 0.5, "no ratio shared by two settings", ha="center", va="center",
                transform=bx.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fig4(a: dict, path: pathlib.Path) -> float | None:
    """Histogram of the seed spread; returns the share above 1 % (None with one seed)."""
    import matplotlib.pyplot as plt

    spread = a.get("seed_spread")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    share = None
    if spread is None or not spread.size:
        ax.text(0.5, 0.5, "needs >= 2 seeds", ha="center", va="center", transform=ax.transAxes)
    else:
        share = float((spread > 1.0).mean())
        ax.hist(spread, bins=np.arange(0, max(2.0, float(np.percentile(spread, 99.5))) + 0.25,
                                       0.25))
        ax.set_title(f"max - min test accuracy over seeds ({100 * share:.1f}% above 1%)")
    ax.set_xlabel("accuracy difference (%)")
    ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return share


def plot_fig5(a: dict, path: pathlib.Path, max_lines: int) -> None:
    """Per-architecture and per-group accuracy vs the batch size / lr ratio."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 5))
    grid = fig.add_gridspec(2, 4)
    ax = fig.add_subplot(grid[:, 0])
    colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
    r = a["ratios"]
    rows = np.arange(len(a["groups"]))
    if len(rows) > max_lines:
        rows = np.random.default_rng(0).choice(rows, max_lines, replace=False)
    alpha = 0.15 if len(rows) > 50 else 0.6
    for i in rows:
        ax.plot(r, a["arch_ratio"][i], color=colors.get(int(a["groups"][i]), "gray"),
                alpha=alpha, lw=0.7, marker="." if len(r) == 1 else None)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ratio r = batch size / lr")
    ax.set_ylabel("mean test accuracy (%)")
    ax.set_title("architectures (color = group)")
    for j, g in enumerate(GROUPS):
        top, bottom = fig.add_subplot(grid[0, j + 1]), fig.add_subplot(grid[1, j + 1])
        curve = a["group_ratio"].get(g)
        n = int((a["groups"] == g).sum())
        if curve is not None:
            top.plot(r, curve, marker="o", color=colors[g])
            bottom.bar(np.arange(len(r) - 1), np.diff(curve), color=colors[g])
            bottom.axhline(0, color="k", lw=0.7)
            bottom.set_xticks(np.arange(len(r) - 1), [f"{v:g}" for v in r[1:]], rotation=90,
                              fontsize=6)
        top.set_xscale("log", base=2)
        top.set_title(f"group {g} ({n} archs)")
        bottom.set_xlabel("next ratio r'")
        if j == 0:
            top.set_ylabel("mean test acc (%)")
            bottom.set_ylabel("a(r') - a(r)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_figures(table: Table, out_dir: str | pathlib.Path, max_lines: int = 1011,
                  table_desc: str = "") -> dict:
    """Writes Figures 3-5 and `analysis.json` for a table (see the module docstring).

    Args:
        table: any table (sub-grids of classes, lrs and batch sizes; any epochs).
        out_dir: output directory (created).
        max_lines: architectures drawn in Figure 5 (left).
        table_desc: the table's description for `analysis.json`.

    Returns:
        The `analysis.json` dict.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(table)
    plot_fig3(a, table, out / "fig3_hparams.png")
    share = plot_fig4(a, out / "fig4_seed_spread.png")
    plot_fig5(a, out / "fig5_groups.png", max_lines)
    tolist = lambda x: np.where(np.isfinite(x), x, np.nan).round(4).tolist()
    summary = dict(table=table_desc, rows=table.n_rows, seeds=list(table.seeds),
                   epochs=table.n_epochs, lrs=list(table.lrs),
                   batch_sizes=list(table.batch_sizes), heatmap=tolist(a["heatmap"]),
                   ratios=a["ratios"].tolist(),
                   group_sizes={g: int((a["groups"] == g).sum()) for g in GROUPS},
                   group_ratio={g: tolist(v) for g, v in a["group_ratio"].items()},
                   seed_spread_share_above_1=share)
    (out / "analysis.json").write_text(json.dumps(summary, indent=1))
    return summary
