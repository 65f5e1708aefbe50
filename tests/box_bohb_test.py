"""Tests for `nhb.search.box_bohb`: hpbandster's bracket shapes and promotions, failed
evaluations, the recording rule and the largest model, integer canonicalisation, determinism,
resuming from bytes, and a synthetic objective on which BOHB beats random sampling."""

import dataclasses

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.search import box_bohb as bb
from nhb.search import kde

CARDS = (0, 0, 0)
HNAG_BOUNDS = [(3, 10), (2, 5), None, (3, 10), None, (3, 10), (2, 5), None]
C = np.array([0.8, 0.2, 0.65])


def _cfg(**kw) -> bb.BoxBOHBConfig:
    """Budgets 1/2/4 epochs, eta 2, 12 iterations: one compilation for the 3-dim tests."""
    return bb.BoxBOHBConfig(**{**dict(min_budget=1, max_budget=4, n_iterations=12), **kw})


def _quadratic(x: np.ndarray) -> np.ndarray:
    return 100 * np.sum((np.asarray(x, np.float64) - C) ** 2, -1)


@pytest.mark.parametrize("budgets", [(1, 2, 4), (30, 60, 120)])
def test_bracket_sequence(budgets):
    cfg = _cfg(min_budget=budgets[0], max_budget=budgets[2])
    assert cfg.eta == 2 and cfg.num_samples == 64 and cfg.random_fraction == pytest.approx(1 / 3)
    assert cfg.bandwidth_factor == 3 and cfg.min_bandwidth == 1e-3 and cfg.top_n_percent == 15
    st = bb.init(jax.random.key(0), CARDS, cfg)
    got: list[list[tuple[int, float]]] = []
    key = jax.random.key(1)
    while int(st.iteration) < 6:
        if int(st.stage) == 0:
            got.append([])
        key, k = jax.random.split(key)
        x, budget, st = bb.ask(k, st)
        info = bb.stage_info(st)
        assert info["epochs"] == int(budget) and x.shape == (info["n"], 3)
        got[-1].append((x.shape[0], budget))
        st = bb.tell(st, np.arange(x.shape[0], dtype=float))
    b0, b1, b2 = map(float, budgets)
    want = [[(4, b0), (2, b1), (1, b2)], [(2, b1), (1, b2)], [(3, b2)]] * 2
    assert got == want
    assert int(st.n_evals) == 2 * (7 + 3 + 3)


def test_promotions_by_loss_keep_creation_order():
    st = bb.init(jax.random.key(0), CARDS, _cfg())
    x0, _, st = bb.ask(jax.random.key(1), st)
    st = bb.tell(st, [5.0, 1.0, 3.0, 2.0])
    x1, b1, st = bb.ask(jax.random.key(2), st)
    assert b1 == 2.0 and bb.stage_info(st)["promoted"].tolist() == [True, True]
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x0)[[1, 3]])  # creation order
    st = bb.tell(st, [4.0, 0.5])
    x2, b2, st = bb.ask(jax.random.key(3), st)
    assert b2 == 4.0
    np.testing.assert_array_equal(np.asarray(x2), np.asarray(x0)[[3]])
    st = bb.tell(st, [0.25])
    assert int(st.inc_budget) == 2 and float(st.inc_loss) == 0.25
    np.testing.assert_array_equal(np.asarray(st.inc_x), np.asarray(x0)[3])
    x3, b3, st = bb.ask(jax.random.key(4), st)  # bracket [2, 1] at budgets 2, 4
    assert b3 == 2.0 and x3.shape[0] == 2
    st = bb.tell(st, [7.0, 7.0])  # a tie: the earlier config advances
    x4, _, st = bb.ask(jax.random.key(5), st)
    np.testing.assert_array_equal(np.asarray(x4), np.asarray(x3)[:1])


def test_failed_evaluations_are_inf_and_refilled():
    st = bb.init(jax.random.key(0), CARDS, _cfg())
    x0, _, st = bb.ask(jax.random.key(1), st)
    st = bb.tell(st, [np.nan, 1.0, np.inf, -np.inf])
    np.testing.assert_array_equal(np.asarray(st.obs_loss[0, :4]), [np.inf, 1.0, np.inf, np.inf])
    assert int(st.obs_n[0]) == 4 and int(st.n_prom) == 1
    x1, _, st = bb.ask(jax.random.key(2), st)
    info = bb.stage_info(st)
    assert info["promoted"].tolist() == [True, False]
    np.testing.assert_array_equal(np.asarray(x1[0]), np.asarray(x0[1]))
    assert not (np.asarray(x1[1]) == np.asarray(x0)).all(-1).any()  # a new config fills in
    st = bb.tell(st, [np.nan, np.nan])  # a whole stage fails
    assert int(st.n_prom) == 0 and int(st.stage) == 2
    x2, b2, st = bb.ask(jax.random.key(3), st)
    assert b2 == 4.0 and x2.shape[0] == 1 and not bb.stage_info(st)["promoted"].any()
    st = bb.tell(st, [3.0])
    assert int(st.iteration) == 1 and int(st.inc_budget) == 2 and float(st.inc_loss) == 3.0
    with pytest.raises(ValueError):
        _, _, s2 = bb.ask(jax.random.key(4), st)
        bb.tell(s2, [1.0])  # two configs asked, one loss told
    with pytest.raises(RuntimeError):
        bb.tell(st, [1.0, 2.0])  # nothing pending


def _with_results(st: bb.BoxState, b: int, x: np.ndarray, loss: np.ndarray) -> bb.BoxState:
    ox, ol, on = (np.asarray(a).copy() for a in (st.obs_x, st.obs_loss, st.obs_n))
    ox[b, :len(x)], ol[b, :len(x)], on[b] = x, loss, len(x)
    return st.replace(obs_x=jnp.asarray(ox), obs_loss=jnp.asarray(ol), obs_n=jnp.asarray(on))


def test_model_of_the_largest_budget_and_recording_rule():
    r = np.random.default_rng(0)
    st = bb.init(jax.random.key(0), CARDS, _cfg(random_fraction=0.0))
    assert kde.KDESettings().n_model(3) == 8
    # budget 1: good results near 0.1; budget 2 (the largest with a model): near 0.9
    near = lambda c: np.clip(c + 0.02 * r.standard_normal((4, 3)), 0, 1)
    x1 = np.concatenate([near(0.1), r.uniform(size=(6, 3))])
    x2 = np.concatenate([near(0.9), r.uniform(size=(6, 3))])
    loss = np.concatenate([np.arange(4.0), 50 + np.arange(6.0)])
    st = _with_results(_with_results(st, 0, x1, loss), 1, x2, loss)
    x, _, st = bb.ask(jax.random.key(1), st)
    assert bb.stage_info(st)["model_based"].all()
    assert (np.asarray(x) > 0.6).all(), x  # sampled around budget 2's good results
    x_again, _, _ = bb.ask(jax.random.key(1), st.replace(pending=jnp.asarray(False)))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_again))  # same key, same configs
    x_other, _, _ = bb.ask(jax.random.key(2), st.replace(pending=jnp.asarray(False)))
    assert not np.array_equal(np.asarray(x), np.asarray(x_other))
    st = bb.tell(st, [1.0, 2.0, 3.0, 4.0])
    assert int(st.obs_n[0]) == 10  # budget 0 is not recorded: a model exists at budget 1
    st2 = bb.tell(bb.ask(jax.random.key(1), bb.init(jax.random.key(0), CARDS, _cfg()))[2],
                  [1.0, 2.0, 3.0, 4.0])
    assert np.asarray(st2.obs_n).tolist() == [4, 0, 0]  # without models it is


def test_canonical_integer_values():
    canon = bb.int_canonicalizer(HNAG_BOUNDS)
    v = canon(np.linspace(0, 1, 8))
    assert bb.int_value(v[0], 3, 10) == 3 and bb.int_value(v[5], 3, 10) == 8
    assert v[0] == pytest.approx(0.49999 / 7.99998) and v[2] == pytest.approx(2 / 7)
    r = np.random.default_rng(1)
    cards = (0,) * 8
    raw_cfg = _cfg(random_fraction=0.5)
    st = bb.init(jax.random.key(0), cards, dataclasses.replace(raw_cfg, canonicalize=canon))
    xs = np.stack([canon(row) for row in r.uniform(size=(20, 8))])
    st = _with_results(st, 2, xs, r.uniform(0, 50, 20))  # a model at budget 2 (18 results)
    raw_st = st.replace(config=raw_cfg)
    x, _, st = bb.ask(jax.random.key(0), st)
    info = bb.stage_info(st)
    assert info["model_based"].any() and not info["model_based"].all()
    x = np.asarray(x)
    np.testing.assert_array_equal(np.stack([canon(row) for row in x]), x)  # fixed points
    for j, b in enumerate(HNAG_BOUNDS):
        if b is not None:
            vals = bb.int_value(x[:, j], *b)
            assert ((vals >= b[0]) & (vals <= b[1])).all()
            np.testing.assert_allclose(x[:, j], (vals - b[0] + 0.49999) / (b[1] - b[0] + 0.99998),
                                       rtol=1e-6)
    # the same draws without canonicalisation: floats equal, ints round to the same values
    raw, _, _ = bb.ask(jax.random.key(0), raw_st)
    raw = np.asarray(raw)
    floats = [j for j, b in enumerate(HNAG_BOUNDS) if b is None]
    np.testing.assert_array_equal(raw[:, floats], x[:, floats])
    assert not np.array_equal(raw, x)
    np.testing.assert_array_equal(bb.int_value(raw[:, 0], 3, 10), bb.int_value(x[:, 0], 3, 10))


def test_resume_from_bytes_between_ask_and_tell():
    cfg = _cfg()
    st = bb.init(jax.random.key(0), CARDS, cfg)
    key = jax.random.key(7)
    for _ in range(7):  # past the first model at budget 1
        key, k = jax.random.split(key)
        x, _, st = bb.ask(k, st)
        st = bb.tell(st, _quadratic(x))
    x, _, st = bb.ask(jax.random.key(8), st)  # pending stage
    blob = flax.serialization.to_bytes(st)
    back = flax.serialization.from_bytes(bb.init(jax.random.key(0), CARDS, cfg), blob)
    assert bool(back.pending)
    a, b = bb.tell(st, _quadratic(x)), bb.tell(back, _quadratic(x))
    xa, _, a = bb.ask(jax.random.key(9), a)
    xb, _, b = bb.ask(jax.random.key(9), b)
    np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb))
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


def _run(seed: int, random_fraction: float) -> tuple[float, float]:
    """Incumbent's true loss and the mean true loss of the max-budget evaluations."""
    st = bb.init(jax.random.key(0), CARDS, _cfg(n_iterations=9, random_fraction=random_fraction))
    key, top = jax.random.key(seed), []
    while not bb.done(st):
        key, k = jax.random.split(key)
        x, budget, st = bb.ask(k, st)
        f = _quadratic(x)
        if budget == 4.0:
            top.extend(f)
        st = bb.tell(st, f + 5.0 / budget)  # smaller budgets: biased losses
    return float(st.inc_loss) - 5.0 / 4.0, float(np.mean(top))


def test_bohb_beats_random_sampling_on_a_quadratic():
    """9 iterations (50 evaluations), 6 seeds: BOHB vs the same schedule with uniform configs
    (random_fraction 1, i.e. Hyperband = random search with successive halving)."""
    bohb = np.array([_run(s, 1 / 3) for s in range(6)])
    rand = np.array([_run(s, 1.0) for s in range(6)])
    assert bohb[:, 0].mean() < rand[:, 0].mean()
    assert bohb[:, 1].mean() < 0.8 * rand[:, 1].mean()
    assert (bohb[:, 1] < rand[:, 1]).mean() >= 5 / 6
