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

`plot_pareto(table_or_benchmark, path)` draws the multi-objective view: accuracy vs
parameters (or FLOPs) of every stored config, with the Pareto front highlighted.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

from nhb.bench.api import FIELDS, Benchmark
from nhb.bench.objectives import objective_tables, scale_of_meta
from nhb.bench.table import Table
from nhb.search.selection import pareto_front
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
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(11, 4.2))
    ax, bx = fig.subplots(1, 2)
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


def plot_fig4(a: dict, path: pathlib.Path) -> float | None:
    """Histogram of the seed spread; returns the share above 1 % (None with one seed)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    spread = a.get("seed_spread")
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
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
    return share


def plot_fig5(a: dict, path: pathlib.Path, max_lines: int) -> None:
    """Per-architecture and per-group accuracy vs the batch size / lr ratio."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(13, 5))
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


def pareto_points(source: Table | Benchmark, metric: str = "valid", objective: str = "params",
                  epoch: int | None = None, seed: str | int = "official") -> dict:
    """Accuracy and model size of every stored config, and the accuracy / size Pareto front.

    Args:
        source: a `Table` or a `Benchmark` (its stored rows x learning rates x batch sizes).
        metric: "valid" or "test" accuracy.
        objective: "params" or "flops" (`nhb.bench.objectives`; lower is better).
        epoch: 1..n_epochs (None: the last, 12 for the benchmark).
        seed: "official" (the smallest seed), "mean" (NaN-aware) or an int seed index.

    Returns:
        Dict: acc, size (float [P], P = rows x lrs x bss, NaN accuracies kept), front (bool [P]),
        codes, lrs, bss (each point's cell code, lr and batch-size values), the args, and
        seed_desc (e.g. "seed 222").
    """
    if metric not in ("valid", "test") or objective not in ("params", "flops"):
        raise ValueError(f"metric {metric!r} / objective {objective!r} is invalid; valid "
                         "choices: metric 'valid' or 'test', objective 'params' or 'flops'")
    if isinstance(source, Benchmark):
        e = source.n_epochs if epoch is None else epoch
        source._check_epoch(e)
        acc = np.asarray(source.packed[..., e - 1, FIELDS.index(f"{metric}_acc")])
        cells = np.asarray(source.cells)
        size = np.asarray(getattr(source, f"{objective}_of_cell"))[cells]
        lrs = np.asarray(nhb2.LRS)[list(source.space.lrs)]
        bss = np.asarray(nhb2.BATCH_SIZES)[list(source.space.bss)]
        official, seeds = source.official_seed, source.seeds
    else:
        e = source.n_epochs if epoch is None else epoch
        if not 1 <= e <= source.n_epochs:
            raise ValueError(f"epoch {e} is invalid; valid choices: 1..{source.n_epochs}")
        acc = source.metrics[f"{metric}_acc"][..., e - 1]
        cells = np.asarray(source.cells)
        size = getattr(objective_tables(**scale_of_meta(source.meta)), objective)[cells]
        lrs, bss = np.asarray(source.lrs), np.asarray(source.batch_sizes)
        official, seeds = int(np.argmin(source.seeds)), tuple(source.seeds)
    if seed == "mean":
        acc = _nanmean(acc, -1)
    elif seed == "official" or (isinstance(seed, int) and 0 <= seed < acc.shape[-1]):
        acc = acc[..., official if seed == "official" else seed]
    else:
        raise ValueError(f"seed {seed!r} is invalid; valid choices: 'official', 'mean' or "
                         f"0..{acc.shape[-1] - 1}")
    rows, n_lr, n_bs = acc.shape
    acc = np.asarray(acc, np.float64).reshape(-1)
    size = np.repeat(np.asarray(size, np.float64), n_lr * n_bs)
    codes = [_cells.code_of(_cells.digits_of_index(int(c))) for c in cells]
    return dict(acc=acc, size=size, front=pareto_front(size, acc),
                codes=np.repeat(np.asarray(codes), n_lr * n_bs),
                lrs=np.tile(np.repeat(lrs, n_bs), rows), bss=np.tile(bss, rows * n_lr),
                metric=metric, objective=objective, epoch=e, seed=seed,
                seed_desc="seed mean" if seed == "mean" else
                f"seed {seeds[official if seed == 'official' else seed]}")


def plot_pareto(source: Table | Benchmark, path: str | pathlib.Path, metric: str = "valid",
                objective: str = "params", epoch: int | None = None,
                seed: str | int = "official") -> list[dict]:
    """Accuracy vs parameters (or FLOPs) of all stored configs, the Pareto front highlighted.

    Args:
        source: a `Table` or a `Benchmark`.
        path: the PNG to write (its directory is created).
        metric, objective, epoch, seed: as `pareto_points` (default: the 12-epoch validation
            accuracy of the official seed against the parameter count).

    Returns:
        The front's configs, by increasing size: dicts of code, lr, batch_size, size, acc.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    p = pareto_points(source, metric, objective, epoch, seed)
    idx = np.nonzero(p["front"])[0]
    idx = idx[np.lexsort((-p["acc"][idx], p["size"][idx]))]
    front = [dict(code=str(p["codes"][i]), lr=float(p["lrs"][i]), batch_size=int(p["bss"][i]),
                  size=int(p["size"][i]), acc=float(p["acc"][i])) for i in idx]
    unit = 1e6 if objective == "flops" else 1e3
    label = "MFLOPs (multiply-adds)" if objective == "flops" else "parameters (thousands)"
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ok = np.isfinite(p["acc"])
    ax.scatter(p["size"][ok] / unit, p["acc"][ok], s=6, alpha=0.25, color="tab:gray",
               lw=0, label=f"configs ({int(ok.sum())})")
    if len(idx):
        ax.step(p["size"][idx] / unit, p["acc"][idx], where="post", color="tab:red", lw=1)
        ax.scatter(p["size"][idx] / unit, p["acc"][idx], s=24, color="tab:red", zorder=3,
                   label=f"Pareto front ({len(idx)})")
        for f in front:
            ax.annotate(f"{f['code']} lr={f['lr']:g} bs={f['batch_size']}",
                        (f["size"] / unit, f["acc"]), fontsize=6, xytext=(3, -9),
                        textcoords="offset points")
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} accuracy (%), epoch {p['epoch']}")
    ax.set_title(f"{metric} accuracy vs {objective} ({p['seed_desc']})")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return front
