"""NAP2 evaluation: baselines of the predictor, agent grids, fold summaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from nhb.nap2 import evaluation as ev
from nhb.search import selection


def test_extrapolation_recovers_a_curve_of_its_family():
    a, b, c = 0.8, 1.3, 2.0
    x = np.arange(1, 9)
    curve = a - b ** (c - x)
    assert ev.extrapolate(curve, 40.0) == pytest.approx(a - b ** (c - 40.0), abs=1e-3)
    assert ev.extrapolate(curve[:2], 40.0) == curve[1]  # too few points: the last one
    assert ev.extrapolate(np.array([0.1, np.nan, 0.2]), 10.0) == 0.2


def test_rank_quality_is_scipys_spearman_per_method():
    rng = np.random.default_rng(0)
    final = rng.uniform(20, 60, 30)
    valid = final[:, None] * np.linspace(0.3, 1.0, 6)[None] + rng.normal(0, 3, (30, 6))
    pred = final[:, None] / 100 + rng.normal(0, 0.05, (30, 6))
    q = ev.rank_quality(pred, valid, final, (1, 10), 20.0)
    assert q["nap2"]["1"] == pytest.approx(scipy.stats.spearmanr(pred[:, 0], final)[0])
    assert q["nap2"]["10"] == pytest.approx(scipy.stats.spearmanr(pred[:, 5], final)[0])
    assert q["valid_acc"]["10"] == pytest.approx(scipy.stats.spearmanr(valid[:, 5], final)[0])
    assert q["lc_extrapolation"]["1"] == q["valid_acc"]["1"]  # one point: the last value
    assert np.isnan(ev.spearman(np.ones(5), np.arange(5.0)))


def test_agents_grid_equals_the_selection_functions():
    rng = np.random.default_rng(1)
    n, k = 24, 8
    final = rng.uniform(10, 50, n).astype(np.float32)
    pred = (final[:, None] / 100 + rng.normal(0, 0.03, (n, k))).astype(np.float32)
    loss = (3 - final[:, None] / 25 + rng.normal(0, 0.1, (n, k))).astype(np.float32)
    feats = rng.integers(0, 4, (n, 3)).astype(np.int32)
    grid = ev.AgentGrid(final_sizes=(5,), firsts=(1, 2), intervals=(1,), cuts=(0.3,),
                        cut_decays=(1.0, 1.5), etas=(2,), min_budgets=(1,), seeds=2)
    out = ev.run_agents(jax.random.key(0), pred, loss, final, feats, (4, 4, 4), grid)
    assert [len(out[a][5]) for a in ev.AGENTS] == [4, 2, 2, 2]
    p = next(q for q in out["nap2"][5] if q["first"] == 2 and q["cut_decay"] == 1.5)
    sel = jax.jit(selection.successive_cut)(jnp.asarray(pred), 2, 1, 0.3, 1.5, 5)
    m = selection.metrics(sel.order, 5, jnp.asarray(final))
    assert p["resources"] == float(sel.resources)
    assert p["top5_precision"] == pytest.approx(float(m["top5"]))
    assert p["accuracy_gap"] == pytest.approx(float(m["gap"]))
    sh = out["sh"][5][0]
    sel = selection.successive_cut(-jnp.asarray(loss), 1, 1, 0.3, 1.0, 5)
    assert sh["resources"] == float(sel.resources) and sh["cut_decay"] == 1.0
    with pytest.raises(ValueError, match="needs more than"):
        ev.run_agents(jax.random.key(0), pred, loss, final, feats, (4, 4, 4),
                      ev.AgentGrid(final_sizes=(24,)))


def test_summary_means_intervals_fronts_and_equal_resources():
    def fold(top5, gap, res):
        return {"sh": {10: [dict(first=1, resources=res, top3_precision=0.0,
                                 top5_precision=top5, accuracy_gap=gap),
                            dict(first=2, resources=2 * res, top3_precision=0.0,
                                 top5_precision=top5 / 2, accuracy_gap=gap)]}}

    s = ev.summarise([fold(0.4, 1.0, 10), fold(0.8, 3.0, 10), fold(0.6, 2.0, 10)], [5, 15, 25])
    p = next(q for q in s["agents"]["sh"]["final_10"] if q["first"] == 1)
    assert p["top5_precision"] == pytest.approx(0.6) and p["n"] == 3
    half = scipy.stats.t.ppf(0.975, 2) * np.std([0.4, 0.8, 0.6], ddof=1) / np.sqrt(3)
    assert p["top5_precision_ci95"] == pytest.approx(half)
    assert p["pareto_top5"] and p["pareto_gap"]
    q = next(q for q in s["agents"]["sh"]["final_10"] if q["first"] == 2)
    assert not q["pareto_top5"]  # more resources, lower precision: dominated
    rows = s["equal_resources"]["final_10"]["sh"]
    assert rows[0] is None and rows[1]["setting"] == {"first": 1}
    assert rows[2]["top5_precision"] == pytest.approx(0.6)


def test_mse_curve():
    pred = np.array([[0.5, 0.2], [0.1, 0.3]])
    np.testing.assert_allclose(ev.mse_curve(pred, np.array([20.0, 30.0])),
                               [(0.09 + 0.04) / 2, (0.0 + 0.0) / 2])
