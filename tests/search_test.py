"""Every strategy finds the known optimum of a synthetic table; sequential phases; registry.

The runs are deterministic (fixed keys), so the thresholds below are exact outcomes, not
probabilities. With the reference settings BOHB's KDE (min_bandwidth 0.3 over 8 categorical
dimensions, bandwidths from the std of category indices, 4 candidates) keeps few dimensions
of its good configs, so it and BOHB->RE are checked for finding the optimum in some runs and
for a small mean regret, and RE (aging, population 10) on the 8-dim separable table likewise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import search
from nhb.bench.api import Benchmark
from nhb.search import synthetic
from nhb.space import nhb2

RUNS = 8
FULL = 24.0  # seconds of one full query in the synthetic tables
QUERIES = {"rs": 450, "sh": 650, "hyperband": 650, "bohb": 273, "re": 1550, "reinforce": 1550,
           "rs_re": 1550, "bohb_re": 1550}  # trajectory lengths
BUDGETS = {"rs": 400, "sh": 120, "hyperband": 200, "bohb": 1, "re": 1500, "reinforce": 1500,
           "rs_re": 1500, "bohb_re": 1500}  # in full queries (bohb: 40 iterations regardless)


@pytest.fixture(scope="module")
def sep() -> Benchmark:
    return Benchmark(synthetic.separable_table())


@pytest.fixture(scope="module")
def hp_only() -> Benchmark:
    return Benchmark(synthetic.separable_table(op_weights=(1.0, 1.0, 1.0, 1.0)))


def _final(name: str, b: Benchmark) -> tuple[np.ndarray, np.ndarray, float]:
    s = search.make(name)
    q = QUERIES[name]
    tr = search.run_many(jax.random.key(0), s, s.default_params(), b, FULL * BUDGETS[name], RUNS,
                         q)
    assert not np.asarray(tr.truncated).any()
    last = np.asarray(tr.n_queries) - 1
    idx = np.asarray(tr.best_index)[np.arange(RUNS), last]
    best = np.asarray(tr.best_valid)[np.arange(RUNS), last]
    return idx, best, b.best("valid", "official")[1]


@pytest.mark.parametrize("name", ["rs", "sh", "hyperband"])
def test_uniform_samplers_find_the_best_hyperparameters(name, hp_only):
    idx, best, opt = _final(name, hp_only)  # cells are irrelevant: 1 in 48 configs is best
    assert np.all(best == opt)
    cfg = nhb2.from_index(idx)
    assert np.all(np.asarray(cfg.lr) == 5) and np.all(np.asarray(cfg.bs) == 2)


@pytest.mark.parametrize("name", ["reinforce", "rs_re"])
def test_finds_the_unique_optimum_in_every_run(name, sep):
    idx, best, opt = _final(name, sep)
    cfg, value = synthetic.best_config()
    assert opt == value and np.all(best == opt)
    assert np.all(idx == int(nhb2.to_index(cfg)))


@pytest.mark.parametrize(("name", "min_hits", "max_regret"),
                         [("re", 6, 0.5), ("bohb_re", 3, 2.0)])
def test_finds_the_unique_optimum_in_some_runs(name, min_hits, max_regret, sep):
    idx, best, opt = _final(name, sep)
    assert np.sum(best == opt) >= min_hits and np.mean(opt - best) <= max_regret
    assert np.all(idx[best == opt] == int(nhb2.to_index(synthetic.best_config()[0])))


def test_bohb_finds_the_best_hyperparameters(hp_only):
    _, best, opt = _final("bohb", hp_only)  # 40 iterations = 273 queries
    assert np.sum(best == opt) >= 6 and np.all(opt - best <= 1.5)


def test_sequential_phases(sep):
    s = search.Sequential(hpo="rs", hpo_budget=10 * FULL)
    tr = jax.tree.map(np.asarray, search.run_many(jax.random.key(2), s, (), sep, 40 * FULL, 2, 64))
    for i in range(2):
        n = int(tr.n_queries[i])
        cfg = nhb2.from_index(tr.index[i, :n])
        cell = np.asarray(nhb2.cell_index(cfg.cell))
        lr, bs = np.asarray(cfg.lr), np.asarray(cfg.bs)
        assert len(set(cell[:10])) == 1  # HPO on one cell while the clock < 10 full queries
        hpo = slice(0, 10)
        k = int(np.argmax(tr.valid_acc[i, hpo]))
        assert np.all(lr[10:] == lr[k]) and np.all(bs[10:] == bs[k])  # fixed to the incumbent
        assert cell[10] == cell[0]  # the reference's reseeding repeats the HPO cell first
        assert n == 40 and tr.time[i, n - 1] == 40 * FULL


def test_bohb_then_re_phase_lengths(sep):
    s = search.make("bohb_re")
    tr = jax.tree.map(np.asarray, search.run_many(jax.random.key(3), s, s.default_params(), sep,
                                                  FULL * 60, 2, 128))
    epochs = tr.epoch[0, :33]
    assert epochs.tolist() == ([1] * 9 + [4] * 3 + [12] + [4] * 3 + [12] + [12] * 3 + [1] * 9
                               + [4] * 3 + [12])
    assert np.all(tr.epoch[0, 33:int(tr.n_queries[0])] == 12)
    cells = np.asarray(nhb2.cell_index(nhb2.from_index(tr.index[0, :33]).cell))
    assert len(set(cells)) == 1


def test_make_names_the_choices():
    with pytest.raises(ValueError, match="valid choices"):
        search.make("bayes")
    with pytest.raises(ValueError, match="valid choices"):
        search.make("bohb", bohb_mode="fast")
    assert search.make("bohb", "budget").n_iterations is None
    assert search.make("bohb_re", "budget").hpo_iterations is None
    assert search.make("re") == search.RegularizedEvolution(10, 3)
    assert jnp.asarray(search.make("sh").sched["epochs"]).tolist() == [1, 4, 12]


def _experiment():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "experiments" / "nhb2_search.py"
    spec = importlib.util.spec_from_file_location("nhb2_search", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_experiment_outputs(sep, tmp_path):
    import json

    exp = _experiment()
    with pytest.raises(ValueError, match="valid choices"):
        exp.parse_methods("rs,bayes")
    assert exp.parse_methods("rs, re") == ["rs", "re"] and exp.parse_seed("1") == 1
    res = exp.run_method("rs", sep, 6, 30 * FULL, 0, "faithful", "official")
    summary = dict(methods={"rs": exp.summarize(res, sep.has_200)})
    s = summary["methods"]["rs"]
    assert s["test_acc_12"]["n"] == 6 and s["queries"]["min"] == 30
    assert s["paper"]["test_acc_12"]["mean"] == 83.90
    assert "| RS |" in exp.table3_markdown(summary)
    exp.plot_regret([res], 30 * FULL, tmp_path / "fig6.png")
    exp.write_trajectories([res], tmp_path)
    runs = json.loads((tmp_path / "trajectories" / "rs.json").read_text())
    assert len(runs) == 6 and len(runs[0]["time"]) == 30 and runs[0]["time"][-1] == 30 * FULL
    lines = (tmp_path / "trajectories.csv").read_text().splitlines()
    assert len(lines) == 1 + 6 * 30 and (tmp_path / "fig6.png").stat().st_size > 10_000
    grid = np.array([FULL - 1, FULL, 30 * FULL])
    mean, half = exp.regret_curve(res["traj"], res["scores"].regret, grid)
    assert np.isnan(mean[0]) and mean[1] >= mean[2] >= 0 and np.all(half[1:] >= 0)


# ----------------------------------------------------------------------------- sub-spaces

# Trajectories on the full space (random_table(5, n_seeds=1), key 7, 3 runs, 20,000 s, 400
# queries) recorded with the code before sub-spaces existed (commit 0181ecd): sha256 prefix of
# (index, epoch, time, best_index, n_queries), total queries, sum of the first 5 indices.
FULL_SPACE_GOLDEN = {
    "rs": ("f1f220583f483734", 123, 1072001), "re": ("b06ba3f4e332b4a1", 127, 1072001),
    "reinforce": ("5389ab491be2761c", 121, 1075073), "sh": ("cde1cf8f3926b5e8", 586, 1072001),
    "hyperband": ("fc27643da0ebb709", 319, 1072001), "bohb": ("02a58adcb450b32d", 819, 1535470),
    "rs_re": ("c2d75b546e3bb7fd", 116, 2289732), "bohb_re": ("ddba66df5f794cfb", 183, 2289720)}


def test_full_space_runs_are_bit_identical_to_the_reference_code():
    import hashlib

    from nhb import bench

    b = Benchmark(bench.random_table(5, n_seeds=1))
    assert b.space.is_full
    for name, want in FULL_SPACE_GOLDEN.items():
        s = search.make(name)
        tr = jax.tree.map(np.asarray, search.run_many(jax.random.key(7), s, s.default_params(),
                                                      b, 20000.0, 3, 400))
        h = hashlib.sha256()
        for a in (tr.index, tr.epoch, tr.time, tr.best_index, tr.n_queries):
            h.update(np.ascontiguousarray(a).tobytes())
        assert (h.hexdigest()[:16], int(tr.n_queries.sum()), int(tr.index[:, :5].sum())) == want


@pytest.fixture(scope="module")
def sub_bench() -> Benchmark:
    """8 classes x lrs (1, 3, 5, 6) x batch sizes (2, 4), one seed, 3 epochs (the smoke
    preset's length: full queries stop at epoch 3, Hyperband's budgets are 1 and 3)."""
    from nhb import bench
    from nhb.space import cells

    reps = cells.cell_tables().representative
    return Benchmark(bench.random_table(11, rows=reps[::97][:8], n_seeds=1, n_epochs=3,
                                        lr_indices=[1, 3, 5, 6], bs_indices=[2, 4]))


@pytest.mark.parametrize("name", search.METHODS)
def test_every_method_stays_in_a_sub_grid_space(name, sub_bench):
    sp = sub_bench.space
    assert not sp.is_full and not sp.all_cells and sp.n_distinct == 8 * 4 * 2
    s = search.make(name)
    budget = 40 * sub_bench.mean_cost()
    q = s.on(sp).query_bound(sub_bench, budget)
    tr = jax.tree.map(np.asarray, search.run_many(jax.random.key(3), s, s.default_params(),
                                                  sub_bench, budget, 6, q))
    assert not tr.truncated.any() and (tr.n_queries > 10).all()
    queried = np.concatenate([tr.index[i, :n] for i, n in enumerate(tr.n_queries)])
    assert bool(jnp.all(sp.contains(nhb2.from_index(queried))))  # never outside the table
    assert np.isfinite(tr.valid_acc[tr.index >= 0]).all()
    assert len(np.unique(queried)) >= 8  # it explores
    lrs = np.asarray(nhb2.from_index(queried).lr)
    assert set(np.unique(lrs)) <= {1, 3, 5, 6}
    epochs = set(np.unique(tr.epoch[tr.index >= 0]).tolist())
    assert epochs == ({1, 3} if name in ("sh", "hyperband", "bohb", "bohb_re") else {3})
    if name in ("sh", "hyperband"):
        assert s.on(sp).sched["epochs"].tolist() == [1, 3]


def test_epochs_must_fit_the_table():
    from nhb import bench

    one = Benchmark(bench.random_table(0, rows=[0], n_seeds=1, n_epochs=1))
    with pytest.raises(ValueError, match=r"do not fit a table of 1 epochs"):
        search.make("hyperband").on(one.space).query_bound(one, 100.0)
    tr = search.run_many(jax.random.key(0), search.make("rs"), (), one, 100.0, 2, 50)
    assert (np.asarray(tr.epoch)[np.asarray(tr.index) >= 0] == 1).all()
    with pytest.raises(ValueError, match="the table has 1"):
        s = search.make("rs").on(search.SearchSpace.full())
        search.run_many(jax.random.key(0), s, (), one, 100.0, 2, 50)


def test_sequential_clock_charges_what_the_runner_charges():
    """A non-finite cost is charged 0 s (as the runner does), so it does not end phase 1: the
    HPO phase lasts while the runner's clock (0, 30, 60, 90) is below 100 s."""
    s = search.Sequential(hpo="rs", hpo_budget=100.0)
    ask = jax.jit(lambda k, st: s.ask(k, st, ()))
    tell = jax.jit(lambda st, c, f, cost: s.tell(st, c, f, (), cost))
    st = s.init(jax.random.key(0), ())
    phases = []
    for i, cost in enumerate([np.nan, 30.0, 30.0, 30.0, 30.0, np.inf, 30.0]):
        cfg, _, st = ask(jax.random.key(i), st)
        phases.append(int(st.phase))
        st = tell(st, cfg, jnp.float32(50.0), jnp.float32(cost))
    assert phases == [0, 0, 0, 0, 0, 1, 1]
    assert float(st.t_hi) + float(st.t_lo) == 150.0 and int(st.n_hpo) == 5
