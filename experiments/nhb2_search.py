r"""NAS-HPO-Bench-II search benchmark (paper §5): Table 3 and Figure 6 from simulated runs.

Each method runs `--runs` independent searches (run index = seed) with `--budget` simulated
seconds as the authors' scripts do (see `nhb.search`), all runs of a method as one vmapped
program. The selected config of a run is its incumbent (best validation accuracy queried);
it is scored by its 12-epoch test accuracy and its 200-epoch value.

  python experiments/nhb2_search.py --table=PATH --methods=rs,re,reinforce,bohb,rs_re,bohb_re \
      --runs=500 --output_dir=runs/search
  python experiments/nhb2_search.py --table=random --runs=100 --output_dir=/tmp/search  # demo

Writes to `--output_dir`: `summary.json` (per method: mean/std of the final 12-epoch test
accuracy and 200-epoch value, final regret, queries, compile and search seconds),
`table3.md` (with the paper's numbers beside), `fig6_regret.png` (mean validation regret vs
simulated time, log axis, 95% confidence band of the mean), `trajectories/<method>.json` and
`trajectories.csv` (every query of every run). `--table=random` uses `random_table` (a
synthetic table: demos only, not the benchmark).
"""

from __future__ import annotations

import csv
import json
import pathlib
import time

import jax
import numpy as np
from absl import app, flags, logging

from nhb import search
from nhb.bench import load_table, random_table
from nhb.bench.api import Benchmark
from nhb.space import nhb2

_TABLE = flags.DEFINE_string("table", None, "Table file, or 'random' for a synthetic demo "
                             "table (random_table).")
_METHODS = flags.DEFINE_string("methods", ",".join(search.PAPER_METHODS),
                               f"Comma-separated methods from {list(search.METHODS)}.")
_RUNS = flags.DEFINE_integer("runs", 500, "Runs per method.")
_BUDGET = flags.DEFINE_float("budget", 20000.0, "Simulated seconds per run.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Base PRNG seed (run i uses step_key(seed, i)).")
_BOHB_MODE = flags.DEFINE_enum("bohb_mode", "faithful", list(search.BOHB_MODES),
                               "faithful: BOHB stops after the reference's 40 iterations "
                               "(bohb_re's HPO after 4); budget: at the time budgets.")
_QUERY_SEED = flags.DEFINE_string("query_seed", "official", "Seed of the queries: official, "
                                  "mean, random or an int index.")
_MAX_QUERIES = flags.DEFINE_integer("max_queries", 0, "Trajectory length (0: a bound "
                                    "derived from the table's cheapest query).")
_RANDOM_SEED = flags.DEFINE_integer("random_table_seed", 0, "Seed of --table=random.")
_CACHE = flags.DEFINE_string("compilation_cache", "", "Directory of JAX's persistent "
                             "compilation cache (reruns then skip most of the compile time); "
                             "empty: off.")

PAPER_TABLE3 = {  # (12-epoch mean, std), (200-epoch mean, std)
    "rs": ((83.90, 1.34), (87.41, 2.14)), "re": ((84.32, 1.71), (87.85, 1.45)),
    "reinforce": ((83.95, 1.13), (87.65, 1.32)), "bohb": ((84.47, 0.92), (87.86, 0.89)),
    "bohb_re": ((82.63, 3.84), (87.39, 6.54)), "rs_re": ((83.16, 2.26), (87.82, 1.30)),
}
LABELS = {"rs": "RS", "re": "RE", "reinforce": "REINFORCE", "bohb": "BOHB",
          "bohb_re": "BOHB then RE", "rs_re": "RS then RE", "sh": "SH", "hyperband": "Hyperband"}


def parse_methods(text: str) -> list[str]:
    """Method names from a comma-separated list; raises naming the valid choices."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in search.METHODS]
    if bad or not names:
        raise ValueError(f"unknown method(s) {bad or text!r}; valid choices: "
                         f"{list(search.METHODS)}")
    return names


def parse_seed(text: str) -> str | int:
    """The query seed mode from its flag text."""
    return int(text) if text.lstrip("-").isdigit() else text


def load_benchmark(table: str | None, random_seed: int = 0) -> tuple[Benchmark, str]:
    """The benchmark of `--table` (a path or 'random') and a description."""
    if not table:
        raise ValueError("--table is required: a table file, or 'random' for a synthetic "
                         "demo table")
    if table == "random":
        return Benchmark(random_table(random_seed)), f"random_table({random_seed})"
    return Benchmark(load_table(table)), str(table)


def run_method(name: str, bench: Benchmark, runs: int, budget: float, seed: int,
               bohb_mode: str, query_seed: str | int, max_queries: int = 0) -> dict:
    """Runs one method's `runs` searches; returns numpy trajectories, scores and timings."""
    strategy = search.make(name, bohb_mode)
    params = strategy.default_params()
    q = max_queries or strategy.query_bound(bench, budget, query_seed)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = search.run_many.lower(key, strategy, params, bench, budget, runs, q,
                                     query_seed).compile()
    t1 = time.perf_counter()
    traj = jax.block_until_ready(compiled(key, params, bench, budget))
    t2 = time.perf_counter()
    oracle = bench.best("valid", "mean" if query_seed == "random" else query_seed)[1]
    scores = search.score(traj, oracle)
    traj, scores = jax.tree.map(np.asarray, (traj, scores))
    if traj.truncated.any():
        logging.warning("%s: %d runs hit max_queries=%d before their end; raise --max_queries",
                        name, int(traj.truncated.sum()), q)
    return dict(name=name, traj=traj, scores=scores, compile_s=t1 - t0, search_s=t2 - t1,
                max_queries=q, oracle_valid=oracle)


def _stats(x: np.ndarray) -> dict | None:
    x = x[np.isfinite(x)]
    return dict(mean=float(x.mean()), std=float(x.std()), n=int(x.size)) if x.size else None


def summarize(res: dict, has_200: bool) -> dict:
    """The summary.json entry of one method."""
    tr, sc = res["traj"], res["scores"]
    n = tr.n_queries
    last = np.maximum(n - 1, 0)[:, None]
    return dict(
        label=LABELS.get(res["name"], res["name"]),
        test_acc_12=_stats(sc.final_test), acc_200=_stats(sc.final_200) if has_200 else None,
        final_valid=_stats(np.take_along_axis(tr.best_valid, last, 1)[:, 0]),
        final_regret=_stats(np.take_along_axis(sc.regret, last, 1)[:, 0]),
        queries=dict(mean=float(n.mean()), min=int(n.min()), max=int(n.max())),
        final_time=_stats(tr.time[:, -1]), truncated_runs=int(tr.truncated.sum()),
        compile_s=res["compile_s"], search_s=res["search_s"],
        wall_s=res["compile_s"] + res["search_s"], max_queries=res["max_queries"],
        oracle_valid=res["oracle_valid"], paper=_paper(res["name"]))


def _paper(name: str) -> dict | None:
    if name not in PAPER_TABLE3:
        return None
    (m12, s12), (m200, s200) = PAPER_TABLE3[name]
    return dict(test_acc_12=dict(mean=m12, std=s12), acc_200=dict(mean=m200, std=s200))


def table3_markdown(summary: dict) -> str:
    """Paper-Table-3-style markdown: ours beside the paper's numbers."""
    fmt = lambda s: "n/a" if s is None else f"{s['mean']:.2f} ± {s['std']:.2f}"
    lines = ["| Algorithm | Result (200 epoch) | Result (12 epoch) | paper 200 | paper 12 | "
             "queries | wall s |", "|---|---|---|---|---|---|---|"]
    for s in summary["methods"].values():
        p = s["paper"] or {}
        lines.append(f"| {s['label']} | {fmt(s['acc_200'])} | {fmt(s['test_acc_12'])} | "
                     f"{fmt(p.get('acc_200'))} | {fmt(p.get('test_acc_12'))} | "
                     f"{s['queries']['mean']:.1f} | {s['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def regret_curve(traj, regret: np.ndarray, grid: np.ndarray,
                 min_share: float = 0.5) -> tuple[np.ndarray, ...]:
    """Mean regret and its 95% half-width at each grid time over the runs that have made a
    query by then; NaN where fewer than `min_share` of the runs have."""
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


def plot_regret(results: list[dict], budget: float, path: pathlib.Path) -> None:
    """Figure 6: mean validation regret vs simulated time (log axis) with 95% bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_min = min(float(r["traj"].time[:, 0][r["traj"].n_queries > 0].min()) for r in results)
    t_max = max(budget, *(float(r["traj"].time[:, -1].max()) for r in results))
    grid = np.geomspace(max(t_min, 1.0), t_max, 300)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        mean, half = regret_curve(r["traj"], r["scores"].regret, grid)
        line, = ax.plot(grid, mean, label=LABELS.get(r["name"], r["name"]))
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
    plt.close(fig)


def write_trajectories(results: list[dict], out: pathlib.Path) -> None:
    """Per-run trajectories: `trajectories/<method>.json` and one `trajectories.csv`."""
    tdir = out / "trajectories"
    tdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        tr, sc = r["traj"], r["scores"]
        runs = []
        index = np.maximum(tr.index, 0)
        cells = index // nhb2.NUM_HPS
        lrs, bss = (index // nhb2.NUM_BS) % nhb2.NUM_LRS, index % nhb2.NUM_BS
        for i in range(len(tr.n_queries)):
            n = int(tr.n_queries[i])
            cell, lr, bs = cells[i, :n], lrs[i, :n], bss[i, :n]
            f = lambda a, n=n: [None if not np.isfinite(v) else round(float(v), 5)
                                for v in a[:n]]
            runs.append(dict(run=i, time=f(tr.time[i]), epoch=tr.epoch[i, :n].tolist(),
                             cell=cell.tolist(), lr=lr.tolist(), bs=bs.tolist(),
                             valid_acc=f(tr.valid_acc[i]), best_index=tr.best_index[i, :n].tolist(),
                             best_valid=f(tr.best_valid[i]), best_test=f(tr.best_test[i]),
                             best_200=f(tr.best_200[i]), regret=f(sc.regret[i]),
                             final_test=f(sc.final_test[i:i + 1], 1)[0],
                             final_200=f(sc.final_200[i:i + 1], 1)[0]))
            for j in range(n):
                rows.append((r["name"], i, j, runs[-1]["time"][j], int(tr.epoch[i, j]),
                             int(cell[j]), int(lr[j]), int(bs[j]), runs[-1]["valid_acc"][j],
                             runs[-1]["best_valid"][j], runs[-1]["best_test"][j],
                             runs[-1]["best_200"][j], runs[-1]["regret"][j]))
        (tdir / f"{r['name']}.json").write_text(json.dumps(runs))
    with open(out / "trajectories.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "run", "query", "time", "epoch", "cell", "lr", "bs", "valid_acc",
                    "best_valid", "best_test", "best_200", "regret"])
        w.writerows(rows)


def main(argv: list[str]) -> None:
    """Runs the methods and writes the outputs."""
    del argv
    methods = parse_methods(_METHODS.value)
    if not _OUTPUT_DIR.value:
        raise app.UsageError("--output_dir is required")
    out = pathlib.Path(_OUTPUT_DIR.value)
    out.mkdir(parents=True, exist_ok=True)
    query_seed = parse_seed(_QUERY_SEED.value)
    if _CACHE.value:
        jax.config.update("jax_compilation_cache_dir", _CACHE.value)
    bench, desc = load_benchmark(_TABLE.value, _RANDOM_SEED.value)
    results, summary = [], dict(table=desc, runs=_RUNS.value, budget=_BUDGET.value,
                                bohb_mode=_BOHB_MODE.value, query_seed=query_seed,
                                backend=jax.default_backend(), has_200=bench.has_200,
                                methods={})
    for name in methods:
        res = run_method(name, bench, _RUNS.value, _BUDGET.value, _SEED.value,
                         _BOHB_MODE.value, query_seed, _MAX_QUERIES.value)
        results.append(res)
        summary["methods"][name] = s = summarize(res, bench.has_200)
        logging.info("%-10s 12-epoch test %s  200-epoch %s  (%.1f s compile + %.2f s search)",
                     name, s["test_acc_12"], s["acc_200"], s["compile_s"], s["search_s"])
    summary["total_wall_s"] = sum(s["wall_s"] for s in summary["methods"].values())
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table3.md").write_text(table3_markdown(summary))
    plot_regret(results, _BUDGET.value, out / "fig6_regret.png")
    write_trajectories(results, out)
    print(table3_markdown(summary))
    print(f"wrote {out}/summary.json, table3.md, fig6_regret.png, trajectories/ "
          f"(total {summary['total_wall_s']:.1f} s)")


if __name__ == "__main__":
    app.run(main)
