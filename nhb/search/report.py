"""Study outputs: the regret curve (Figure 6), the hypervolume curve and per-query trajectory
files.

Used by `nhb.search.study.run_study`; each function takes `run_method` results (dicts with the
method `name`, NumPy `traj` (`Trajectory`) and `scores` (`Scores`)).
"""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from nhb.space import nhb2


def regret_curve(traj, regret: np.ndarray, grid: np.ndarray,
                 min_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Mean regret and its 95% half-width at each grid time over the runs that have made a
    query by then; NaN where fewer than `min_share` of the runs have.

    Args:
        traj: NumPy `Trajectory` [runs, Q].
        regret: [runs, Q] regret after each query.
        grid: times (s).
        min_share: minimum share of runs with a query by the grid time.

    Returns:
        (mean, half-width), each [len(grid)].
    """
    vals = np.full((len(regret), len(grid)), np.nan)
    for i in range(len(regret)):
        n = int(traj.n_queries[i])
        k = np.searchsorted(traj.time[i, :n], grid, side="right") - 1
        ok = k >= 0
        vals[i, ok] = regret[i, k[ok]]
    count = np.isfinite(vals).sum(0)
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(count > 0, vals, 0.0), 0)
        half = 1.96 * np.nanstd(np.where(count > 0, vals, 0.0), 0) / np.sqrt(np.maximum(count, 1))
    mean[count < max(1, min_share * len(regret))] = np.nan
    return mean, half


def plot_regret(results: list[dict], budget: float, path: pathlib.Path,
                labels: dict[str, str] | None = None) -> None:
    """Figure 6: mean validation regret vs simulated time (log axis) with 95% bands.

    Args:
        results: `run_method` results.
        budget: the budget (s), drawn as a dotted line.
        path: PNG file.
        labels: method name -> legend label.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    from nhb.search.study import LABELS

    labels = LABELS if labels is None else labels
    firsts = [r["traj"].time[:, 0][r["traj"].n_queries > 0] for r in results]
    t_min = min((float(f.min()) for f in firsts if f.size), default=1.0)
    t_max = max(budget, *(float(r["traj"].time[:, -1].max()) for r in results))
    grid = np.geomspace(max(t_min, 1e-3), max(t_max, 2 * max(t_min, 1e-3)), 300)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for r in results:
        mean, half = regret_curve(r["traj"], r["scores"].regret, grid)
        line, = ax.plot(grid, mean, label=labels.get(r["name"], r["name"]))
        ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    ax.axvline(budget, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("mean regret of validation accuracy (%)")
    ax.set_title("NAS-HPO-Bench-II: mean regret (95% CI of the mean)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_hypervolume(results: list[dict], budget: float, path: pathlib.Path,
                     labels: dict[str, str] | None = None) -> None:
    """Mean hypervolume of each method's full queries vs simulated time, with 95% bands.

    Args:
        results: `run_method` results (with `hv_times`, `hv` and `objectives`).
        budget: the budget (s), drawn as a dotted line.
        path: PNG file.
        labels: method name -> legend label.
    """
    from matplotlib.figure import Figure

    from nhb.search.study import LABELS

    labels = LABELS if labels is None else labels
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for r in results:
        hv = r["hv"]
        mean = hv.mean(0)
        half = 1.96 * hv.std(0) / np.sqrt(len(hv))
        line, = ax.plot(r["hv_times"], mean, label=labels.get(r["name"], r["name"]))
        ax.fill_between(r["hv_times"], mean - half, mean + half, color=line.get_color(),
                        alpha=0.2)
    ax.axvline(budget, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("simulated time (s)")
    objectives = " / ".join(results[0]["objectives"]) if results else ""
    ax.set_ylabel(f"mean hypervolume ({objectives}, normalised)")
    ax.set_title("NAS-HPO-Bench-II: hypervolume of full queries (95% CI of the mean)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _nullable(a: np.ndarray) -> list:
    """Values rounded to 5 decimals, None where not finite (JSON null / empty CSV field)."""
    a = np.asarray(a, np.float64)
    out = np.round(np.where(np.isfinite(a), a, 0.0), 5).astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def write_trajectories(results: list[dict], out: pathlib.Path) -> None:
    """Per-run trajectories: `trajectories/<method>.json` and one `trajectories.csv`.

    Args:
        results: `run_method` results.
        out: output directory.
    """
    out = pathlib.Path(out)
    tdir = out / "trajectories"
    tdir.mkdir(parents=True, exist_ok=True)
    with open(out / "trajectories.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "run", "query", "time", "epoch", "cell", "lr", "bs", "valid_acc",
                    "best_valid", "best_test", "best_200", "regret"])
        for r in results:
            tr, sc = r["traj"], r["scores"]
            index = np.maximum(tr.index, 0)
            cells = index // nhb2.NUM_HPS
            lrs, bss = (index // nhb2.NUM_BS) % nhb2.NUM_LRS, index % nhb2.NUM_BS
            cols = dict(time=tr.time, valid_acc=tr.valid_acc, best_valid=tr.best_valid,
                        best_test=tr.best_test, best_200=tr.best_200, regret=sc.regret)
            cols = {k: _nullable(v) for k, v in cols.items()}
            finals = _nullable(sc.final_test), _nullable(sc.final_200)
            runs = []
            for i in range(len(tr.n_queries)):
                n = int(tr.n_queries[i])
                run = dict(run=i, time=cols["time"][i][:n], epoch=tr.epoch[i, :n].tolist(),
                           cell=cells[i, :n].tolist(), lr=lrs[i, :n].tolist(),
                           bs=bss[i, :n].tolist(), valid_acc=cols["valid_acc"][i][:n],
                           best_index=tr.best_index[i, :n].tolist(),
                           best_valid=cols["best_valid"][i][:n],
                           best_test=cols["best_test"][i][:n], best_200=cols["best_200"][i][:n],
                           regret=cols["regret"][i][:n], final_test=finals[0][i],
                           final_200=finals[1][i])
                runs.append(run)
                w.writerows(zip([r["name"]] * n, [i] * n, range(n), run["time"], run["epoch"],
                                run["cell"], run["lr"], run["bs"], run["valid_acc"],
                                run["best_valid"], run["best_test"], run["best_200"],
                                run["regret"], strict=True))
            (tdir / f"{r['name']}.json").write_text(json.dumps(runs))
