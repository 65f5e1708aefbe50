"""A NAS-HPO-Bench-II study end to end: build a table, search it, analyse it.

`build_and_study(preset, output_dir)` is the README's main job: it builds (or resumes, or
loads) the preset's table with `nhb.bench.build`, runs the search methods of paper §5 on it
in simulated time (`nhb.search.study.run_study`, budget scaled to the table) and draws the
paper's figures for it (`nhb.bench.analysis.write_figures`). Outputs, under `output_dir`:

  table.nhb, plan.json, shards/, build_report.json   the build (`nhb.bench.build`)
  search/    summary.json, table3.md (Table 3), fig6_regret.png (Figure 6), trajectories
  analysis/  analysis.json, fig3_hparams.png (Figure 3 heatmap), fig4/fig5
  study.json the headline numbers of all three

Every step is deterministic in its seed; re-running the same command trains nothing (the
build is finished) and rewrites the search and analysis outputs with the same numbers.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence

from nhb.bench import analysis
from nhb.bench import build as _build
from nhb.bench.api import Benchmark
from nhb.bench.table import Table, atomic_write
from nhb.search import PAPER_METHODS
from nhb.search.study import run_study

STUDY_FILE = "study.json"


def format_summary(table: Table, path: str | os.PathLike) -> str:
    """A few human-readable lines about a built table."""
    s, m = table.summary(), table.meta
    lines = [f"table: {path}  (preset {s['protocol']}, dataset {s['dataset']}, "
             f"scale {m.get('scale')}, train metrics {m.get('train_metrics', 'eval')})",
             f"  {s['runs']} runs = {s['rows']} classes x {len(table.lrs)} lrs x "
             f"{len(table.batch_sizes)} batch sizes x {len(s['seeds'])} seeds, {s['epochs']} "
             f"epochs; diverged {s['diverged_runs']}"]
    rate = m.get("runs_per_s")
    lines.append(f"  built on {m.get('device')} in {m.get('wall_time_s')} s wall "
                 f"({rate and round(rate, 4)} runs/s, {m.get('sessions')} session(s))")
    acc = s["final_test_acc"]
    if acc:
        lines.append(f"  final test accuracy (seed mean): min {acc['min']:.2f}  mean "
                     f"{acc['mean']:.2f}  max {acc['max']:.2f} %")
    for key in ("best_by_valid", "best_by_test"):
        b = s[key]
        if b:
            lines.append(f"  {key.replace('_', ' ')}: {b['code']}  lr={b['lr']}  "
                         f"bs={b['batch_size']}  valid {b['valid_acc']:.2f}  test "
                         f"{b['test_acc']:.2f} %")
    return "\n".join(lines)


def build_and_study(preset: str | _build.Preset, output_dir: str | os.PathLike, *,
                    executor: str = "local", progress: bool = True,
                    data_dir: str | None = None, compile_cache_dir: str | None = None,
                    study: bool = True, methods: Sequence[str] | str = PAPER_METHODS,
                    runs: int = 500, budget: float | str | None = "auto", seed: int = 0,
                    log: Callable[[str], None] | None = print) -> dict:
    """Builds a preset's table, then runs the search study and the analysis on it.

    Args:
        preset: a preset or its name (`nhb.bench.build.PRESETS`).
        output_dir: the build directory; the study writes `search/`, `analysis/` and
            `study.json` inside it.
        executor, progress, data_dir: see `nhb.bench.build.build`.
        compile_cache_dir: JAX's persistent compilation cache for the build's training
            programs and the study's search programs (None: no cache).
        study: run the search study and the analysis after the build.
        methods: search methods (names from `nhb.search.METHODS`).
        runs: runs per method.
        budget: simulated seconds per run, "auto" (scaled to the table, see
            `nhb.search.study.resolve_budget`) or "paper".
        seed: base PRNG seed of the searches.
        log: printer of progress lines (None: silent).

    Returns:
        `study.json`'s dict: the table summary, and (with `study`) the search summary and
        the analysis.
    """
    say = log or (lambda _: None)
    out = pathlib.Path(output_dir)
    table = _build.build(preset, out, executor=executor, progress=progress,
                         data_dir=data_dir, compile_cache_dir=compile_cache_dir)
    say(format_summary(table, out / _build.TABLE_FILE))
    result = dict(table=table.summary(), build_report=str(out / _build.REPORT_FILE))
    if not study:
        return result
    desc = f"{out / _build.TABLE_FILE} (preset {table.meta.get('protocol')})"
    result["search"] = run_study(Benchmark(table), methods=methods, runs=runs, budget=budget,
                                 output_dir=out / "search", seed=seed, table_desc=desc, log=log,
                                 compilation_cache=compile_cache_dir or "none")
    result["analysis"] = analysis.write_figures(table, out / "analysis", table_desc=desc)
    data = json.dumps(result, indent=1, default=float).encode()
    atomic_write(out / STUDY_FILE, lambda f: f.write(data))
    say(f"wrote {out / 'search'}, {out / 'analysis'} and {out / STUDY_FILE}")
    return result
