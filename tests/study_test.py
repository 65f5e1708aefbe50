"""Tests for nhb.search.study (run_study, budgets, Table 3) and the thin CLIs on sub-grid tables."""

import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from nhb import bench
from nhb.bench.api import Benchmark
from nhb.search import study
from nhb.space import cells, nhb2

ROOT = pathlib.Path(__file__).parents[1]
LRS, BSS = [2, 4, 7], [1, 3]


@pytest.fixture(scope="module")
def sub_table() -> bench.Table:
    """6 classes x 3 lrs x 2 batch sizes, one seed, 12 epochs."""
    reps = cells.cell_tables().representative
    return bench.random_table(21, rows=reps[[3, 50, 400, 700, 900, 1000]], n_seeds=1,
                              lr_indices=LRS, bs_indices=BSS)


@pytest.fixture(scope="module")
def build_dir(sub_table, tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("build")
    bench.save_table(sub_table, d / bench.TABLE_FILE)
    return d


def test_budget_scaled_to_the_table(sub_table):
    b = Benchmark(sub_table)
    assert b.space.n_distinct == 36
    m = sub_table.metrics
    full_cost = (m["train_time"][..., 0, :].astype(np.float64).sum(-1)
                 + m["valid_time"][..., 0, :].astype(np.float64).sum(-1))
    seconds, how = study.resolve_budget(b)  # not the full space: auto
    assert seconds == pytest.approx(9 * full_cost.mean(), rel=1e-6)  # max(5, 36 // 4) = 9
    assert how.startswith("auto: 9 x")
    assert study.resolve_budget(b, "auto", n_queries=20)[0] == pytest.approx(
        20 * full_cost.mean(), rel=1e-6)
    assert study.resolve_budget(b, "paper")[0] == 20000.0
    assert study.resolve_budget(b, "1234.5")[0] == 1234.5
    with pytest.raises(ValueError, match=r"valid choices: seconds \(a number\), 'auto' or "
                                         "'paper'"):
        study.resolve_budget(b, "lots")
    tiny = Benchmark(bench.random_table(0, rows=[0], n_seeds=1, n_epochs=3, lr_indices=[0]))
    assert study.resolve_budget(tiny)[1].startswith("auto: 5 x")  # 6 // 4 = 1 < 5: 5
    full = Benchmark(bench.random_table(0, n_seeds=1, n_epochs=2))  # full space, 2 epochs
    assert study.resolve_budget(full)[1].startswith("auto")  # not the 12-epoch protocol
    assert not study.paper_comparable(full, 20000.0, "official")


def test_run_study_with_workers(sub_table):
    """Four simulated workers make about four times the sequential queries in the same
    (wall-clock) budget, and the summary records the workers."""
    b = Benchmark(sub_table)
    one, four = (study.run_study(b, "rs", runs=4, seed=1, log=None, n_workers=w)
                 for w in (1, 4))
    assert (one["n_workers"], four["n_workers"]) == (1, 4)
    n1, n4 = (s["methods"]["rs"]["queries"]["mean"] for s in (one, four))
    assert 3.0 * n1 <= n4 <= 4.0 * n1 + 4
    assert four["methods"]["rs"]["truncated_runs"] == 0
    with pytest.raises(ValueError, match="n_workers must be a positive integer"):
        study.run_study(b, "rs", runs=1, log=None, n_workers=0)


def test_hypervolume_in_the_study(sub_table, tmp_path):
    """Every method's final hypervolume is that of all its runs' full queries, for the study's
    objectives; the figure and the Table-3 column are written."""
    from nhb.search import hypervolume as hvm

    b = Benchmark(sub_table)
    objectives = ("valid_error", "train_time")
    budget = study.resolve_budget(b)[0]
    res = study.run_method("mo_re", b, 3, budget, 0, "budget", "official",
                           objectives=objectives)
    raw, mask = hvm.trajectory_objectives(res["traj"], b, objectives)
    pts = hvm.objective_bounds(b, objectives).normalise(raw)
    want = hvm.hypervolume_2d(pts, mask, jnp.full(2, 1.0 + hvm.REF_MARGIN))
    np.testing.assert_allclose(res["hv"][:, -1], want, rtol=1e-6)
    assert np.all(np.diff(res["hv"], axis=1) >= 0) and res["hv_times"][-1] >= budget
    summary = study.run_study(b, "rs,mo_re", runs=3, output_dir=tmp_path, log=None,
                              objectives="valid_error,train_time")
    assert summary["objectives"] == list(objectives)
    assert summary["methods"]["mo_re"]["final_hypervolume"]["mean"] == pytest.approx(
        float(np.mean(want)), rel=1e-6)
    assert "hypervolume (valid_error, train_time)" in (tmp_path / "table3.md").read_text()
    assert (tmp_path / "hypervolume.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="valid choices"):
        study.run_study(b, "rs", runs=1, log=None, objectives="valid_error,size")


def test_run_study_on_a_sub_grid_table(sub_table, tmp_path):
    b = Benchmark(sub_table)
    summary = study.run_study(b, "rs,re,bohb", runs=5, output_dir=tmp_path, seed=1, log=None)
    budget = study.resolve_budget(b)[0]
    assert summary["budget"] == budget and not summary["paper_comparable"]
    assert summary["bohb_mode"] == "budget" and summary["space_distinct"] == 36
    for name in ("rs", "re", "bohb"):
        s = summary["methods"][name]
        assert s["paper"] is None and s["test_acc_12"]["n"] == 5 and s["truncated_runs"] == 0
        assert s["final_regret"]["mean"] >= 0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["methods"]["rs"]["queries"] == summary["methods"]["rs"]["queries"]
    md = (tmp_path / "table3.md").read_text()
    assert "| RS |" in md and study.PAPER_LABEL not in md and "not shown" in md
    assert (tmp_path / "fig6_regret.png").stat().st_size > 10_000
    runs = json.loads((tmp_path / "trajectories" / "re.json").read_text())
    cfg = nhb2.make(nhb2.cell_from_index(np.concatenate([r["cell"] for r in runs])),
                    np.concatenate([r["lr"] for r in runs]),
                    np.concatenate([r["bs"] for r in runs]))
    assert bool(jnp.all(b.space.contains(cfg)))  # every query inside the table
    rows = (tmp_path / "trajectories.csv").read_text().splitlines()
    assert len(rows) == 1 + sum(int(s["queries"]["mean"] * 5 + 0.5)
                                for s in summary["methods"].values())


def test_table3_shows_the_paper_only_when_comparable():
    s = dict(label="RS", acc_200=dict(mean=1.0, std=0.5), test_acc_12=None,
             queries=dict(mean=3.0), wall_s=1.0, paper=study._paper("rs"))
    yes = study.table3_markdown(dict(paper_comparable=True, methods={"rs": s}))
    assert study.PAPER_LABEL in yes and "87.41 ± 2.14" in yes
    assert "| RS | 1.00 ± 0.50 | n/a |" in yes
    no = study.table3_markdown(dict(paper_comparable=False, space="x", budget=10.0,
                                    methods={"rs": s}))
    assert "87.41" not in no and "not shown" in no
    with pytest.raises(ValueError, match="valid choices"):
        study.parse_methods("rs,bayes")
    with pytest.raises(ValueError, match="valid choices"):
        study.parse_seed("first")


def _cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args],
                          capture_output=True, text=True, timeout=300)


def test_search_cli_takes_a_build_directory(build_dir, tmp_path):
    out = tmp_path / "search"
    r = _cli("nhb2_search.py", f"--table={build_dir}", "--methods=rs", "--runs=3",
             f"--output_dir={out}")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table"] == str(build_dir) and summary["budget_rule"].startswith("auto")
    bad = _cli("nhb2_search.py", f"--table={build_dir}", "--methods=rs,bayes",
               f"--output_dir={out}")
    assert bad.returncode == 1 and "valid choices" in bad.stderr
    missing = _cli("nhb2_search.py", f"--table={tmp_path}", f"--output_dir={out}")
    assert missing.returncode == 1 and "table.nhb" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


def test_analysis_and_surrogate_clis_on_a_sub_grid_build(build_dir, tmp_path):
    r = _cli("nhb2_analysis.py", f"--table={build_dir}", f"--output_dir={tmp_path / 'a'}")
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert a["lrs"] == [nhb2.LRS[i] for i in LRS] and np.asarray(a["heatmap"]).shape == (3, 2)
    r = _cli("nhb2_surrogate.py", f"--table={build_dir}", "--folds=7",
             f"--output_dir={tmp_path / 's'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "has 6 architecture class(es) but needs at least 7" in r.stderr


def test_compilation_cache_setting(tmp_path, monkeypatch):
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    old_dir = jax.config.jax_compilation_cache_dir
    old_min = jax.config.jax_persistent_cache_min_compile_time_secs
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert study.default_cache_dir() == tmp_path / "xdg" / "nhb" / "jax"
    try:
        assert study.use_compilation_cache("none") is None
        assert study.use_compilation_cache("NONE") is None
        monkeypatch.setenv(study.CACHE_ENV, "none")
        assert study.use_compilation_cache() is None
        monkeypatch.setenv(study.CACHE_ENV, str(tmp_path / "env"))
        assert study.use_compilation_cache() == str(tmp_path / "env")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "env")
        assert (tmp_path / "env").is_dir()
        assert jax.config.jax_persistent_cache_min_compile_time_secs <= study.CACHE_MIN_COMPILE_S
        monkeypatch.delenv(study.CACHE_ENV)
        assert study.use_compilation_cache() == str(tmp_path / "env")  # a configured dir stays
        assert study.use_compilation_cache(tmp_path / "given") == str(tmp_path / "given")
        jax.config.update("jax_compilation_cache_dir", None)
        assert study.use_compilation_cache() == str(study.default_cache_dir())
    finally:
        jax.config.update("jax_compilation_cache_dir", old_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
        compilation_cache.reset_cache()
