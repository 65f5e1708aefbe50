r"""NAS-HPO-Bench-II search benchmark (paper §5): Table 3 and Figure 6 from simulated runs.

Each method runs `--runs` independent searches (run index = seed) on the table's search space
(a sub-grid table: its classes x lrs x batch sizes only) as the authors' scripts do; see
`nhb.search.study.run_study`, which this binary calls.

  python experiments/nhb2_search.py --table=runs/nhb2_lite --runs=500 --output_dir=runs/search
  python experiments/nhb2_search.py --table=PATH/table.nhb --budget=paper --output_dir=DIR
  python experiments/nhb2_search.py --table=random --runs=100 --output_dir=/tmp/search  # demo
  python experiments/nhb2_search.py --table=random --methods=rs,re,mo_rs,mo_re --n_workers=8 \
      --objectives=valid_error,train_time --output_dir=/tmp/search_mo  # 8 workers, MO

`--budget`: seconds, 'paper' (20,000 s) or 'auto' (`--auto_queries` x the table's mean full
query cost; N defaults to a quarter of its distinct configs, at least 5); default: 'paper' on
the full 12-epoch table, else 'auto'. Writes to `--output_dir`: `summary.json`, `table3.md`
(the paper's numbers beside ours only for the full official setting), `fig6_regret.png`,
`hypervolume.png` (of `--objectives`), `trajectories/<method>.json` and `trajectories.csv`.
`--n_workers` simulates asynchronous workers (the budget is then wall-clock time). JAX's
persistent compilation cache is on by default (`--compilation_cache`, default
`$XDG_CACHE_HOME/nhb/jax`; 'none' turns it off), so a rerun loads the six methods' programs
instead of compiling them.
"""

from __future__ import annotations

import pathlib

from absl import app, flags

from nhb import search
from nhb.bench.api import Benchmark
from nhb.bench.cli import define_table_flag, load_table_arg, main_guard
from nhb.search.study import (  # noqa: F401 - re-exported for scripts and tests
    parse_methods,
    parse_seed,
    plot_regret,
    regret_curve,
    run_method,
    run_study,
    summarize,
    table3_markdown,
    write_trajectories,
)

_TABLE = define_table_flag()
_METHODS = flags.DEFINE_string("methods", ",".join(search.PAPER_METHODS),
                               f"Comma-separated methods from {list(search.METHODS)}.")
_RUNS = flags.DEFINE_integer("runs", 500, "Runs per method.")
_BUDGET = flags.DEFINE_string("budget", "", "Simulated seconds per run, 'paper' (20000) or "
                              "'auto' (scaled to the table); empty: 'paper' on the full "
                              "12-epoch table, else 'auto'.")
_AUTO_QUERIES = flags.DEFINE_integer("auto_queries", 0, "N of --budget=auto (N mean full-query "
                                     "costs); 0: a quarter of the table's distinct configs, "
                                     "at least 5.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Output directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Base PRNG seed (run i uses step_key(seed, i)).")
_BOHB_MODE = flags.DEFINE_enum("bohb_mode", None, list(search.BOHB_MODES),
                               "faithful: BOHB stops after the reference's 40 iterations "
                               "(bohb_re's HPO after 4); budget: at the time budgets. Default: "
                               "faithful in the paper's setting (full table, 20000 s), else "
                               "budget.")
_QUERY_SEED = flags.DEFINE_string("query_seed", "official", "Seed of the queries: official, "
                                  "mean, random or an int index.")
_MAX_QUERIES = flags.DEFINE_integer("max_queries", 0, "Trajectory length (0: a bound "
                                    "derived from the table's cheapest query).")
_RANDOM_SEED = flags.DEFINE_integer("random_table_seed", 0, "Seed of --table=random.")
_OBJECTIVES = flags.DEFINE_string("objectives", ",".join(search.hypervolume.DEFAULT_OBJECTIVES),
                                  "The hypervolume's two objectives, of "
                                  f"{list(search.hypervolume.OBJECTIVES)}.")
_WORKERS = flags.DEFINE_integer("n_workers", 1, "Simulated asynchronous workers per run (1: "
                                "sequential, as the paper).", lower_bound=1)
_CACHE = flags.DEFINE_string("compilation_cache", "", "Directory of JAX's persistent "
                             "compilation cache (reruns then skip most of the compile time); "
                             "'none': off; empty: $NHB_JAX_CACHE, else JAX's configured "
                             "cache directory, else $XDG_CACHE_HOME/nhb/jax "
                             "(~/.cache/nhb/jax).")


@main_guard
def main(argv: list[str]) -> None:
    """Runs the study and prints Table 3."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    methods = parse_methods(_METHODS.value)
    if not _OUTPUT_DIR.value:
        raise ValueError("--output_dir is required")
    table, desc = load_table_arg(_TABLE.value, _RANDOM_SEED.value)
    out = pathlib.Path(_OUTPUT_DIR.value)
    summary = run_study(Benchmark(table), methods, _RUNS.value, _BUDGET.value or None, out,
                        seed=_SEED.value, bohb_mode=_BOHB_MODE.value,
                        query_seed=_QUERY_SEED.value, max_queries=_MAX_QUERIES.value,
                        n_queries=_AUTO_QUERIES.value or None, table_desc=desc,
                        compilation_cache=_CACHE.value or None, n_workers=_WORKERS.value,
                        objectives=_OBJECTIVES.value)
    print(table3_markdown(summary))
    print(f"budget: {summary['budget_rule']}\nwrote {out}/summary.json, table3.md, "
          f"fig6_regret.png, hypervolume.png, trajectories/ "
          f"(total {summary['total_wall_s']:.1f} s)")


if __name__ == "__main__":
    app.run(main)
