"""A search study (paper §5, Table 3 and Figure 6) on any table: run methods, score, write.

`run_study(bench, methods, runs, budget, output_dir)` runs each method's `runs` independent
searches (run index = seed; all runs of a method as one vmapped program) on the benchmark's
space (a sub-grid table's configs only; see `nhb.search.sampling`), scores each run's
incumbent by its 12-epoch test accuracy and 200-epoch value and each run's full queries by
their hypervolume over time (two `objectives`, default validation error and parameters;
`nhb.search.hypervolume`), and writes `summary.json`, `table3.md`, `fig6_regret.png`,
`hypervolume.png`, `trajectories/<method>.json` and `trajectories.csv`. JAX's
persistent compilation cache is on by default (`use_compilation_cache`:
`$XDG_CACHE_HOME/nhb/jax`), so a rerun loads each method's program instead of compiling it.

Budget: the paper's 20,000 simulated seconds (`PAPER_BUDGET`) only make sense for the full
12-epoch table; `resolve_budget` scales it to any other table (`budget="auto"`), and the
sequential baselines' HPO phase keeps the paper's share of it (`HPO_SHARE`: 5,000 of 20,000 s,
exactly 5,000 s at the paper's budget). The paper's Table 3 numbers are put beside ours only
when the study is comparable (full space, 12 epochs, the paper's budget and official seed,
one worker); otherwise `table3.md` says why they are left out. `n_workers` > 1 simulates
asynchronous workers (`nhb.search.runner`): the budget is then simulated wall-clock time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from nhb.bench.api import Benchmark
from nhb.search import METHODS, PAPER_METHODS, Sequential, make, run_many, score
from nhb.search.hypervolume import DEFAULT_OBJECTIVES, check_objectives, hypervolume_over_time
from nhb.search.mo_evolution import MORegularizedEvolution
from nhb.search.report import plot_hypervolume, plot_regret, regret_curve, write_trajectories
from nhb.search.runner import check_workers

PAPER_BUDGET = 20000.0
HPO_SHARE = 0.25  # rs_re / bohb_re: 5,000 s of HPO out of 20,000 s
PAPER_EPOCHS = 12
PAPER_TABLE3 = {  # (12-epoch mean, std), (200-epoch mean, std)
    "rs": ((83.90, 1.34), (87.41, 2.14)), "re": ((84.32, 1.71), (87.85, 1.45)),
    "reinforce": ((83.95, 1.13), (87.65, 1.32)), "bohb": ((84.47, 0.92), (87.86, 0.89)),
    "bohb_re": ((82.63, 3.84), (87.39, 6.54)), "rs_re": ((83.16, 2.26), (87.82, 1.30)),
}
LABELS = {"rs": "RS", "re": "RE", "reinforce": "REINFORCE", "bohb": "BOHB",
          "bohb_re": "BOHB then RE", "rs_re": "RS then RE", "sh": "SH", "hyperband": "Hyperband",
          "mo_rs": "MO-RS", "mo_re": "MO-RE"}
HV_POINTS = 100  # times of the hypervolume curve (geometric, 1/1000 of the longest run to it)
PAPER_LABEL = "paper (full official table, 20,000 s)"
CACHE_ENV = "NHB_JAX_CACHE"  # the compilation cache directory, or "none"
CACHE_MIN_COMPILE_S = 0.1  # programs compiling at least this long are cached
__all__ = ["CACHE_ENV", "HPO_SHARE", "LABELS", "PAPER_BUDGET", "PAPER_TABLE3",
           "default_cache_dir", "paper_comparable", "parse_methods", "parse_seed",
           "plot_regret", "regret_curve", "resolve_budget", "run_method", "run_study",
           "summarize", "table3_markdown", "use_compilation_cache", "write_trajectories"]


def default_cache_dir() -> pathlib.Path:
    """`$XDG_CACHE_HOME/nhb/jax`, or `~/.cache/nhb/jax` without XDG_CACHE_HOME."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "nhb" / "jax"


def use_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache, so a later process (another study, a
    rerun) loads the search programs instead of compiling them.

    Args:
        path: the cache directory; "none": leave the cache off; None or "": `$NHB_JAX_CACHE`
            if set (a directory or "none"), else the directory JAX is already configured
            with (`jax_compilation_cache_dir`, e.g. from JAX_COMPILATION_CACHE_DIR), else
            `default_cache_dir()`.

    Returns:
        The directory in use, or None when off. Programs that compile in at least
        `CACHE_MIN_COMPILE_S` are cached (JAX's default threshold, 1 s, would skip most
        search programs); the setting holds for the rest of the process. The cache is
        trusted code: keep it in a directory only you can write.
    """
    if path is None or str(path) == "":
        path = os.environ.get(CACHE_ENV) or None
    if path is not None and str(path).lower() == "none":
        return None
    current = jax.config.jax_compilation_cache_dir
    target = os.fspath(path) if path is not None else current or os.fspath(default_cache_dir())
    os.makedirs(target, exist_ok=True)
    if target != current:
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_compilation_cache_dir", target)
        compilation_cache.reset_cache()  # takes effect even after earlier compilations
    if jax.config.jax_persistent_cache_min_compile_time_secs > CACHE_MIN_COMPILE_S:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    return target


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """Method names from a comma-separated list (or a sequence); raises naming the choices."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [m.strip() for m in items if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"unknown method(s) {bad or text!r}; valid choices: {list(METHODS)}")
    return names


def parse_seed(text: str | int) -> str | int:
    """The query seed mode from its flag text ('official', 'mean', 'random' or an index)."""
    if isinstance(text, int):
        return text
    if text.lstrip("-").isdigit():
        return int(text)
    if text not in ("official", "mean", "random"):
        raise ValueError(f"query seed {text!r} is invalid; valid choices: ['official', 'mean', "
                         "'random'] or a seed index")
    return text


def resolve_budget(bench: Benchmark, budget: float | str | None = None,
                   n_queries: int | None = None,
                   seed: str | int = "official") -> tuple[float, str]:
    """The simulated-seconds budget per run, and a sentence saying how it was chosen.

    Args:
        bench: the benchmark.
        budget: seconds (a number or numeric string); "paper" (20,000 s); "auto": scaled to
            the table = `n_queries` x the mean full-query cost of the table (the mean over
            its stored (class, lr, bs) entries of the 'valid'-mode cost of a query at its last
            epoch - a full 12-epoch query on a 12-epoch table - under `seed`); None or "":
            "paper" on the full 12-epoch table, else "auto".
        n_queries: N of "auto" (default: a quarter of the table's distinct configs =
            classes x lrs x batch sizes, at least 5; the cells of one class give identical
            results, so they are not counted).
        seed: query seed mode (the cost is averaged under it; "random" averages the seeds).

    Returns:
        (seconds, description).
    """
    full = bench.space.is_full and bench.n_epochs == PAPER_EPOCHS
    if budget is None or budget == "":
        budget = "paper" if full else "auto"
    if budget == "paper":
        return PAPER_BUDGET, f"the paper's budget, {PAPER_BUDGET:g} s"
    if budget == "auto":
        n = max(5, bench.space.n_distinct // 4) if n_queries is None else int(n_queries)
        if n < 1:
            raise ValueError(f"auto budget needs n_queries >= 1, got {n}")
        mean = bench.mean_cost(seed=seed)
        return n * mean, (f"auto: {n} x the table's mean full-query cost {mean:.1f} s "
                          f"({bench.n_epochs} epochs; {bench.space.n_distinct} distinct "
                          f"configs) = {n * mean:.1f} s")
    try:
        seconds = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"budget {budget!r} is invalid; valid choices: seconds (a number), "
                         "'auto' or 'paper'") from None
    if not seconds > 0:
        raise ValueError(f"budget must be positive, got {seconds}")
    return seconds, f"{seconds:g} s (given)"


def paper_comparable(bench: Benchmark, budget: float, query_seed: str | int) -> bool:
    """Whether the paper's Table 3 applies: full space, 12 epochs, 20,000 s, official seed."""
    return (bench.space.is_full and bench.n_epochs == PAPER_EPOCHS
            and float(budget) == PAPER_BUDGET and query_seed == "official")


def run_method(name: str, bench: Benchmark, runs: int, budget: float, seed: int,
               bohb_mode: str, query_seed: str | int, max_queries: int = 0,
               hpo_share: float = HPO_SHARE, n_workers: int = 1,
               objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> dict:
    """Runs one method's `runs` searches on the benchmark's space.

    Args:
        name: a method of `METHODS`.
        bench: the benchmark (its `space` is searched).
        runs: number of runs (run i uses `rng.step_key(key(seed), i)`).
        budget: simulated seconds per run.
        seed: base PRNG seed.
        bohb_mode: "faithful" or "budget" (see `nhb.search.make`).
        query_seed: seed mode of the queries.
        max_queries: trajectory length (0: the strategy's bound for this table and budget,
            times `n_workers`).
        hpo_share: the sequential baselines' HPO budget as a share of `budget` (their
            time-bounded phase 1: rs_re, and bohb_re in "budget" mode).
        n_workers: simulated asynchronous workers per run (1: the paper's sequential runs).
        objectives: the two objectives (`nhb.search.hypervolume.OBJECTIVES`) of the
            hypervolume, also those a multi-objective strategy optimises.

    Returns:
        Dict: name, traj and scores (NumPy), compile_s, search_s, max_queries, oracle_valid,
        hv_times [T] and hv [runs, T] (the hypervolume of each run's full queries by then).
    """
    objectives = check_objectives(objectives, 2)
    strategy = make(name, bohb_mode).on(bench.space)
    if isinstance(strategy, Sequential):
        strategy = dataclasses.replace(strategy, hpo_budget=float(budget) * hpo_share)
    if isinstance(strategy, MORegularizedEvolution):
        strategy = dataclasses.replace(strategy, objectives=objectives)
    params = strategy.default_params()
    q = max_queries or strategy.query_bound(bench, budget, query_seed) * n_workers
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = run_many.lower(key, strategy, params, bench, budget, runs, q,
                              query_seed, n_workers=n_workers).compile()
    t1 = time.perf_counter()
    traj = jax.block_until_ready(compiled(key, params, bench, budget))
    t2 = time.perf_counter()
    oracle = bench.best("valid", "mean" if query_seed == "random" else query_seed)[1]
    scores = score(traj, oracle)
    t_max = max(float(budget), float(np.max(traj.time)), 1e-3)
    hv_times = np.geomspace(t_max / 1000, t_max, HV_POINTS)
    hv = hypervolume_over_time(traj, bench, hv_times, objectives)
    traj, scores, hv = jax.tree.map(np.asarray, (traj, scores, hv))
    return dict(name=name, traj=traj, scores=scores, compile_s=t1 - t0, search_s=t2 - t1,
                max_queries=q, oracle_valid=oracle, hv_times=hv_times, hv=hv,
                objectives=objectives)


def _stats(x: np.ndarray) -> dict | None:
    x = x[np.isfinite(x)]
    return dict(mean=float(x.mean()), std=float(x.std()), n=int(x.size)) if x.size else None


def summarize(res: dict, has_200: bool, paper: bool = True) -> dict:
    """The summary.json entry of one method (`paper`: include the paper's numbers).

    `test_acc_12` is the selected configs' test accuracy after a full query: 12 epochs on the
    benchmark, the table's last epoch on a table of another length (the key keeps its name).
    """
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
        final_hypervolume=_stats(res["hv"][:, -1]) if "hv" in res else None,
        compile_s=res["compile_s"], search_s=res["search_s"],
        wall_s=res["compile_s"] + res["search_s"], max_queries=res["max_queries"],
        oracle_valid=res["oracle_valid"], paper=_paper(res["name"]) if paper else None)


def _paper(name: str) -> dict | None:
    if name not in PAPER_TABLE3:
        return None
    (m12, s12), (m200, s200) = PAPER_TABLE3[name]
    return dict(test_acc_12=dict(mean=m12, std=s12), acc_200=dict(mean=m200, std=s200))


def table3_markdown(summary: dict) -> str:
    """Paper-Table-3-style markdown; the paper's numbers beside ours only when comparable."""
    fmt = lambda s, d=2: "n/a" if s is None else f"{s['mean']:.{d}f} ± {s['std']:.{d}f}"
    show = summary.get("paper_comparable", True)
    head = f"| Algorithm | Result (200 epoch) | Result ({summary.get('epochs', 12)} epoch) |"
    if show:
        head += f" {PAPER_LABEL}: 200 | {PAPER_LABEL}: 12 |"
    hv = "hypervolume (" + ", ".join(summary.get("objectives", DEFAULT_OBJECTIVES)) + ")"
    head += f" {hv} |"
    lines = [head + " queries | wall s |", "|---" * (head.count("|") + 1) + "|"]
    for s in summary["methods"].values():
        row = f"| {s['label']} | {fmt(s['acc_200'])} | {fmt(s['test_acc_12'])} |"
        if show:
            p = s["paper"] or {}
            row += f" {fmt(p.get('acc_200'))} | {fmt(p.get('test_acc_12'))} |"
        row += f" {fmt(s.get('final_hypervolume'), 3)} |"
        lines.append(row + f" {s['queries']['mean']:.1f} | {s['wall_s']:.1f} |")
    if not show:
        lines.append("\nThe paper's Table 3 is not shown: it holds for the full official table "
                     f"(4096 cells x 8 lrs x 6 batch sizes, 12 epochs) at {PAPER_BUDGET:g} s "
                     f"with the official seed and one worker; this study searches "
                     f"{summary.get('space')} with budget "
                     f"{summary.get('budget', float('nan')):.1f} s and "
                     f"{summary.get('n_workers', 1)} worker(s).")
    return "\n".join(lines) + "\n"


def run_study(bench: Benchmark, methods: Sequence[str] | str = PAPER_METHODS, runs: int = 500,
              budget: float | str | None = None, output_dir: str | pathlib.Path | None = None,
              seed: int = 0, bohb_mode: str | None = None, query_seed: str | int = "official",
              max_queries: int = 0, n_queries: int | None = None, table_desc: str = "",
              log: Callable[[str], None] | None = print,
              compilation_cache: str | os.PathLike | None = None, n_workers: int = 1,
              objectives: Sequence[str] | str = DEFAULT_OBJECTIVES) -> dict:
    """Runs a search study on a benchmark (any table) and writes its outputs.

    Args:
        bench: the benchmark; its `space` (the table's sub-grid) is searched.
        methods: method names (a sequence or a comma-separated string) from `METHODS`.
        runs: runs per method.
        budget: seconds, "auto", "paper" or None (see `resolve_budget`: the paper's 20,000 s
            on the full 12-epoch table, else auto = N mean full-query costs of the table).
        output_dir: where to write summary.json, table3.md, fig6_regret.png,
            hypervolume.png, trajectories/ and trajectories.csv (None: write nothing).
        seed: base PRNG seed.
        bohb_mode: "faithful" (BOHB stops after the reference's 40 iterations = 273 queries,
            bohb_re's HPO phase after 4, whatever the clock) or "budget" (at the time budget);
            None: "faithful" when the study is comparable with the paper (full 12-epoch
            table, 20,000 s, official seed), else "budget" (on a small table 40 iterations
            would dwarf the other methods' scaled budget).
        query_seed: seed mode of the queries ("official" as the paper).
        max_queries: trajectory length (0: derived from the table and budget).
        n_queries: N of the auto budget (default a quarter of the distinct configs, >= 5).
        table_desc: the table's description for the summary.
        log: progress printer (None: silent).
        compilation_cache: JAX's persistent compilation cache directory ("none": off; None:
            the default, see `use_compilation_cache`), so reruns skip most of the compiling.
        n_workers: simulated asynchronous workers per run (1: sequential, as the paper; the
            budget is then simulated wall-clock seconds).
        objectives: the hypervolume's two objectives (names of
            `nhb.search.hypervolume.OBJECTIVES`, a sequence or comma-separated), scored for
            every method and optimised by the multi-objective ones (`MO_METHODS`).

    Returns:
        The summary dict (as summary.json): table, space, budget, per-method statistics.
    """
    names = parse_methods(methods)
    objectives = check_objectives(objectives, 2)
    query_seed = parse_seed(query_seed)
    seconds, how = resolve_budget(bench, budget, n_queries, query_seed)
    n_workers = check_workers(n_workers)
    comparable = paper_comparable(bench, seconds, query_seed) and n_workers == 1
    if bohb_mode is None:
        bohb_mode = "faithful" if comparable else "budget"
    for name in names:  # settings that cannot fit this table fail before anything runs
        make(name, bohb_mode).on(bench.space).query_bound(bench, seconds, query_seed)
    say = log or (lambda _: None)
    cache = use_compilation_cache(compilation_cache)
    say(f"space: {bench.space.describe()}; budget {how}; bohb_mode {bohb_mode}; "
        f"compilation cache {cache or 'off'}")
    summary = dict(table=table_desc or repr(bench), space=bench.space.describe(),
                   space_configs=bench.space.n_configs, space_distinct=bench.space.n_distinct,
                   full_space=bench.space.is_full, epochs=bench.n_epochs, runs=runs,
                   budget=seconds, budget_rule=how, hpo_budget=seconds * HPO_SHARE,
                   bohb_mode=bohb_mode, query_seed=query_seed, n_workers=int(n_workers),
                   objectives=list(objectives),
                   backend=jax.default_backend(), has_200=bench.has_200,
                   paper_comparable=comparable, methods={})
    results = []
    for name in names:
        res = run_method(name, bench, runs, seconds, seed, bohb_mode, query_seed, max_queries,
                         n_workers=n_workers, objectives=objectives)
        results.append(res)
        summary["methods"][name] = s = summarize(res, bench.has_200, comparable)
        if s["truncated_runs"]:
            say(f"warning: {name}: {s['truncated_runs']} runs hit max_queries="
                f"{res['max_queries']} before their end; raise max_queries")
        say(f"{name:<10} {bench.n_epochs}-epoch test {s['test_acc_12']}  200-epoch {s['acc_200']}  "
            f"({s['compile_s']:.1f} s compile + {s['search_s']:.2f} s search)")
    summary["total_wall_s"] = sum(s["wall_s"] for s in summary["methods"].values())
    if output_dir is not None:
        out = pathlib.Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        (out / "table3.md").write_text(table3_markdown(summary))
        plot_regret(results, seconds, out / "fig6_regret.png")
        plot_hypervolume(results, seconds, out / "hypervolume.png")
        write_trajectories(results, out)
    return summary
