"""Tests for BOHB: budgets, model thresholds, fallback to random, the KDE and its sampling
against a literal NumPy transcription of hpbandster's `get_config` / statsmodels' KDE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb.search import bohb, rng
from nhb.space import nhb2


def np_kde(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels KDEMultivariate(var_type='u'*D, bw='normal_reference'), clipped at 0.3."""
    n, d = data.shape
    bw = 1.06 * np.std(data, axis=0) * n ** (-1.0 / (4 + d))
    return data, np.clip(bw, 0.3, None)


def np_pdf(kde: tuple, x: np.ndarray) -> float:
    """KDEMultivariate.pdf with aitchison_aitken kernels (levels counted from the data)."""
    data, bw = kde
    kval = np.empty(data.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(data.shape[1]):
            levels = np.unique(data[:, i]).size
            k = np.ones(data.shape[0]) * bw[i] / (levels - 1)
            k[data[:, i] == x[i]] = 1 - bw[i]
            kval[:, i] = k
        return float(kval.prod(axis=1).sum() / data.shape[0])


def np_get_config(u: np.ndarray, x: np.ndarray, loss: np.ndarray, cards: tuple,
                  num_samples: int) -> np.ndarray:
    """hpbandster BOHB.get_config for one budget's results, with the strategy's uniforms."""
    d, k, n = len(cards), num_samples, len(loss)
    u_rand, u_pick = u[1:1 + d], u[1 + d:1 + d + k]
    u_keep = u[1 + d + k:1 + d + k + k * d].reshape(k, d)
    u_cat = u[1 + d + k + k * d:].reshape(k, d)
    mp = d + 1
    n_good, n_bad = max(mp, 15 * n // 100), max(mp, 85 * n // 100)
    idx = np.argsort(loss, kind="stable")
    good, bad = np_kde(x[idx[:n_good]]), np_kde(x[idx[n_good:n_good + n_bad]])
    best, best_vector = np.inf, None
    for i in range(k):
        datum = good[0][int(np.floor(u_pick[i] * len(good[0])))]
        vector = [int(m) if u_keep[i, j] < 1 - max(bw, 0.3) else int(np.floor(u_cat[i, j] *
                  cards[j])) for j, (m, bw) in enumerate(zip(datum, good[1], strict=True))]
        lx, gx = np_pdf(good, vector), np_pdf(bad, vector)
        val = max(1e-32, gx) / max(lx, 1e-32)
        if not np.isfinite(val) and np.isfinite(lx):
            best_vector = vector
            break
        if val < best:
            best, best_vector = val, vector
    if best_vector is None:
        return np.floor(u_rand * np.asarray(cards)).astype(int)
    return np.asarray(best_vector)


def _state_with(s: bohb.BOHB, x: np.ndarray, loss: np.ndarray, budget: int) -> bohb.KDEState:
    st = s.sampler_init(jax.random.key(0), s.default_params())
    obs = jax.jit(lambda st, c, lo, b: s.observe(st, c, lo, b, s.default_params()))
    for xi, li in zip(x, loss, strict=True):
        cfg = s.decode(jnp.asarray(xi), st)
        st = obs(st, cfg, jnp.float32(li), jnp.int32(budget))
    return st


def test_model_thresholds():
    assert bohb.model_min_points(8, 9, 15) == 18  # 9 good + 9 bad rows > 8 dims
    assert bohb.model_min_points(3, 4, 15) == 8
    assert bohb.BOHB().n_model == 18 and bohb.BOHB(hpo_only=True).n_model == 8
    s = bohb.BOHB()
    assert s.sched["epochs"].tolist() == [1, 4, 12] and s.n_iterations == 40
    assert s.num_samples == 4 and s.default_params().min_bandwidth == 0.3
    assert s.iteration_queries(40) == 273


@pytest.mark.parametrize("hpo_only", [False, True])
def test_sampling_matches_hpbandster_transcription(hpo_only):
    s = bohb.BOHB(hpo_only=hpo_only, num_samples=5 if hpo_only else 4)
    cards = s.cards
    r = np.random.default_rng(0)
    n = 30
    x = np.stack([r.integers(0, c, n) for c in cards], 1)
    x[:12, :3] = np.minimum(1, np.asarray(cards[:3]) - 1)  # concentrate the good ones a bit
    loss = np.round(r.uniform(0, 50, n), 1)
    loss[:12] -= 40
    st = _state_with(s, x, loss, 2)
    assert int(st.n[2]) == n
    np.testing.assert_array_equal(np.asarray(st.order[2, :n]), np.argsort(loss, kind="stable"))
    propose = jax.jit(lambda k, st: s.encode(s.propose(k, st, s.default_params())))
    d = len(cards)
    for seed in range(25):
        k = jax.random.key(seed)
        u = np.asarray(rng.uniforms(k, 1 + d + s.num_samples + 2 * s.num_samples * d))
        want = np_get_config(u, x, loss, cards, s.num_samples)
        np.testing.assert_array_equal(propose(k, st), want)


def test_random_until_a_model_and_recording_rule():
    s = bohb.BOHB()
    p = s.default_params()
    r = np.random.default_rng(1)
    x = np.stack([r.integers(0, c, 17) for c in s.cards], 1)
    st = _state_with(s, x, r.uniform(0, 50, 17), 2)  # 17 < 18 results: no model
    propose = jax.jit(lambda k, st: s.encode(s.propose(k, st, p)))
    for seed in range(5):
        k = jax.random.key(seed)
        u = rng.uniforms(k, 1 + 8 + 4 + 64)
        want = np.floor(np.asarray(u[1:9]) * np.asarray(s.cards)).astype(int)
        np.testing.assert_array_equal(propose(k, st), want)
    # the 18th result at budget 2 builds a model; smaller budgets stop being recorded
    cfg = s.decode(jnp.asarray(x[0]), st)
    obs = jax.jit(lambda st, lo, b: s.observe(st, cfg, lo, b, p))
    st = obs(st, jnp.float32(1.0), jnp.int32(2))
    assert int(st.n[2]) == 18
    st = obs(st, jnp.float32(1.0), jnp.int32(0))
    assert int(st.n[0]) == 0
    st = obs(st, jnp.float32(jnp.inf), jnp.int32(2))
    assert int(st.n[2]) == 19 and int(st.order[2, 18]) == 18  # a failure ranks last


def test_overflow_is_flagged():
    s = bohb.BOHB(max_obs=4)
    p = s.default_params()
    st = s.sampler_init(jax.random.key(0), p)
    cfg = nhb2.make([0] * 6, 0, 0)
    obs = jax.jit(lambda st, lo: s.observe(st, cfg, lo, jnp.int32(0), p))
    for i in range(5):
        st = obs(st, jnp.float32(i))
    assert int(st.n[0]) == 4 and bool(st.overflow)


def test_hpo_only_keeps_the_fixed_cell():
    s = bohb.BOHB(hpo_only=True)
    st = s.init(jax.random.key(0), s.default_params())
    st = st.replace(sampler=st.sampler.replace(fixed_cell=jnp.asarray([1, 2, 3, 0, 1, 2],
                                                                     jnp.int8)))
    ask = jax.jit(lambda k, st: s.ask(k, st, s.default_params()))
    tell = jax.jit(lambda st, c, f: s.tell(st, c, f, s.default_params()))
    for i in range(5):
        cfg, epoch, st = ask(jax.random.key(i), st)
        assert np.asarray(cfg.cell).tolist() == [1, 2, 3, 0, 1, 2] and int(epoch) == 1
        st = tell(st, cfg, jnp.float32(50.0 + i))


def test_runner_flags_overflow_as_truncated():
    from nhb import bench, search
    from nhb.bench import Benchmark

    b = Benchmark(bench.random_table(0, n_seeds=1))
    s = bohb.BOHB(max_obs=8, n_iterations=3)
    tr = search.run_many(jax.random.key(0), s, s.default_params(), b, 1e5, 2, 20)
    assert np.asarray(tr.truncated).all() and (np.asarray(tr.n_queries) == 20).all()


# ----------------------------------------------------------------------------- sub-spaces

POW4 = 4 ** np.arange(5, -1, -1)
DATUM = [0, 1, 2, 3, 0, 1]
COVERED = [DATUM, [1, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 1], [0, 2, 2, 0, 0, 1],
           [3, 3, 3, 3, 3, 3], [2, 0, 1, 1, 2, 2], [1, 0, 3, 2, 1, 0]]


def _space():
    from nhb.bench.subspace import SearchSpace

    return SearchSpace.make([int(np.dot(c, POW4)) for c in COVERED], lrs=(1, 3, 6), bss=(0, 4))


def test_sub_space_cards_and_slot_encoding():
    sp = _space()
    s, h = bohb.BOHB(space=sp), bohb.BOHB(hpo_only=True, space=sp)
    assert s.cards == (4, 4, 4, 4, 4, 4, 3, 2) and h.cards == (1, 3, 2)
    assert s.n_model == 18 and h.n_model == 8  # the dimensions, not the cardinalities, count
    cfg = nhb2.make(DATUM, 6, 4)
    v = jax.jit(s.encode)(cfg)
    assert v.tolist() == [*DATUM, 2, 1]
    st = s.sampler_init(jax.random.key(0), s.default_params())
    back = s.decode(v, st)
    assert int(back.lr) == 6 and int(back.bs) == 4
    assert jax.jit(h.encode)(cfg).tolist() == [0, 2, 1]


def test_sub_space_uniform_proposals_without_a_model():
    from scipy import stats

    sp = _space()
    s = bohb.BOHB(space=sp)
    st = s.sampler_init(jax.random.key(0), s.default_params())
    keys = jax.random.split(jax.random.key(1), 8400)
    cfg = jax.jit(jax.vmap(lambda k: s.propose(k, st, s.default_params())))(keys)
    assert bool(jnp.all(sp.contains(cfg)))
    _, counts = np.unique(np.asarray(nhb2.to_index(cfg)), return_counts=True)
    assert len(counts) == sp.n_configs == 7 * 3 * 2
    assert stats.chisquare(counts).pvalue > 1e-3


def test_sub_space_candidate_cell_is_hpbandster_law_given_coverage():
    """One candidate per proposal, all good results on one cell (bandwidth 0.3, so each edge
    keeps the datum's op w.p. 0.7, else uniform over 4): the proposed cell's law is
    prod_e (0.7 [c_e = d_e] + 0.3 / 4) over the covered cells, renormalised."""
    from scipy import stats

    sp = _space()
    s = bohb.BOHB(space=sp, num_samples=1)
    r = np.random.default_rng(0)
    n = 30
    cells = np.asarray(COVERED)[r.integers(0, len(COVERED), n)]
    cells[:12] = DATUM
    cells[12], cells[13] = COVERED[4], COVERED[5]  # the bad set has >= 2 ops on every edge
    x = np.concatenate([cells, r.integers(0, 3, (n, 1)), r.integers(0, 2, (n, 1))], 1)
    loss = np.concatenate([np.arange(12), 50 + np.arange(n - 12)]).astype(np.float32)
    st = _state_with(s, x, loss, 2)
    keys = jax.random.split(jax.random.key(2), 6000)
    cfg = jax.jit(jax.vmap(lambda k: s.propose(k, st, s.default_params())))(keys)
    assert bool(jnp.all(sp.contains(cfg)))
    digits = np.asarray(COVERED)
    w = np.prod(np.where(digits == DATUM, 0.7, 0.0) + 0.3 / 4, axis=1)
    p = w / w.sum()
    got = np.asarray(nhb2.cell_index(cfg.cell))
    counts = np.array([(got == int(np.dot(c, POW4))).sum() for c in COVERED])
    assert counts.sum() == len(keys)
    assert p[0] == pytest.approx(0.7750 ** 6 / w.sum()) and p[0] > 0.6
    assert stats.chisquare(counts, p * len(keys)).pvalue > 1e-3
