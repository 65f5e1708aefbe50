"""Tests for `nhb.search.kde` against literal NumPy / SciPy transcriptions of statsmodels'
`KDEMultivariate` (normal_reference, gaussian / aitchison_aitken kernels) and of hpbandster's
`BOHB.get_config`, on mixed ('c' and 'u') spaces, with the same uniforms on both sides."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nhb.search import kde

MIXED = (0, 3, 0, 0, 2)  # 'c', 'u' (3 choices), 'c', 'c', 'u' (2 choices)
HNAG = (0,) * 8  # ints and floats are all 'c' for hpbandster


def np_kde(data: np.ndarray, min_bw: float) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels KDEMultivariate(bw='normal_reference'), bw clipped as hpbandster."""
    n, d = data.shape
    bw = 1.06 * np.std(data, axis=0) * n ** (-1.0 / (4 + d))
    return data, np.clip(bw, min_bw, None)


def np_pdf(k: tuple, x: np.ndarray, cards: tuple) -> float:
    """KDEMultivariate.pdf: statsmodels' gpke with gaussian / aitchison_aitken kernels."""
    data, bw = k
    kval = np.empty(data.shape)
    with np.errstate(all="ignore"):
        for j, t in enumerate(cards):
            xi = data[:, j]
            if t == 0:
                kval[:, j] = (1.0 / np.sqrt(2 * np.pi)) * np.exp(-(xi - x[j]) ** 2
                                                               / (bw[j] ** 2 * 2.0))
            else:
                num_levels = np.asarray(np.unique(xi).size)
                kv = np.ones(xi.size) * bw[j] / (num_levels - 1)
                idx = xi == x[j]
                kv[idx] = (idx * (1 - bw[j]))[idx]
                kval[:, j] = kv
        cont = np.asarray(cards) == 0
        dens = kval.prod(axis=1) / np.prod(bw[cont])
        return float(dens.sum(axis=0) / data.shape[0])


def np_get_config(u: np.ndarray, x: np.ndarray, loss: np.ndarray, cards: tuple,
                  s: kde.KDESettings) -> tuple[np.ndarray, str]:
    """hpbandster BOHB.get_config (model at this budget) with the given uniforms.

    Returns the vector and the path taken ('random', 'break', 'min' or 'none')."""
    d, k, n = len(cards), s.num_samples, len(loss)
    frac, u_rand, u_pick, u_keep, u_cat = (np.asarray(a, np.float64) for a in
                                           kde.split_uniforms(u, d, k))
    uniform = np.where(np.asarray(cards) == 0, u_rand, np.floor(u_rand * np.asarray(cards)))
    if frac < s.random_fraction:
        return uniform, "random"
    mp = s.min_points(d)
    n_good = max(mp, (s.top_n_percent * n) // 100)
    n_bad = max(mp, ((100 - s.top_n_percent) * n) // 100)
    idx = np.argsort(loss, kind="stable")
    good = np_kde(x[idx[:n_good]], s.min_bandwidth)
    bad = np_kde(x[idx[n_good:n_good + n_bad]], s.min_bandwidth)
    minimize_me = lambda v: max(1e-32, np_pdf(bad, v, cards)) / max(np_pdf(good, v, cards),
                                                                     1e-32)
    best, best_vector, path = np.inf, None, "none"
    with np.errstate(all="ignore"):
        for i in range(k):
            datum = good[0][int(np.floor(u_pick[i] * len(good[0])))]
            vector = []
            for j, (m, bw, t) in enumerate(zip(datum, good[1], cards, strict=True)):
                bw = max(bw, s.min_bandwidth)
                if t == 0:
                    bw = s.bandwidth_factor * bw
                    vector.append(stats.truncnorm.ppf(u_keep[i, j], -m / bw, (1 - m) / bw,
                                                      loc=m, scale=bw))
                elif u_keep[i, j] < (1 - bw):
                    vector.append(int(m))
                else:
                    vector.append(int(np.floor(u_cat[i, j] * t)))
            val = minimize_me(vector)
            if not np.isfinite(val) and np.isfinite(np_pdf(good, vector, cards)):
                best_vector, path = vector, "break"
                break
            if val < best:
                best, best_vector, path = val, vector, "min"
    if best_vector is None:
        return uniform, path
    return np.asarray(best_vector, np.float64), path


def _data(seed: int, cards: tuple, n: int, bad_constant: bool = False) -> tuple:
    r = np.random.default_rng(seed)
    x = np.stack([r.uniform(0, 1, n) if c == 0 else r.integers(0, c, n).astype(float)
                  for c in cards], 1)
    loss = np.round(r.uniform(0, 50, n), 2)
    good = loss < 12
    x[good, 0] = np.clip(0.3 + 0.05 * r.standard_normal(good.sum()), 0, 1)  # a good region
    if bad_constant:  # a categorical with a single value among the bad results: g = inf
        best = np.argsort(loss, kind="stable")[:6]  # the good KDE's rows (n_good = 6)
        x[:, 1] = 2.0
        x[best, 1] = r.integers(0, 2, 6)
    return x.astype(np.float32).astype(np.float64), loss


@jax.jit
def _fit_jit(x: jax.Array, mask: jax.Array) -> kde.KDE:
    return kde.fit(x, mask, 1e-3)


def test_bandwidths_and_levels_match_statsmodels():
    x, _ = _data(0, MIXED, 20)
    x[:, 3] = 0.5  # constant -> clipped at min_bandwidth
    mask = np.zeros(24, bool)
    mask[2:20] = True
    xx = np.concatenate([x, np.full((4, 5), 7.0)])  # padding rows outside the mask
    k = _fit_jit(jnp.asarray(xx), jnp.asarray(mask))
    _, bw = np_kde(xx[mask], 1e-3)
    np.testing.assert_allclose(np.asarray(k.bw), bw, rtol=2e-5)
    assert float(k.bw[3]) == pytest.approx(1e-3)
    assert int(k.count) == 18
    want = [np.unique(xx[mask][:, j]).size for j in range(5)]
    assert np.asarray(k.levels).tolist() == want


@pytest.mark.parametrize("cards", [MIXED, HNAG, (3, 2, 6)])
def test_pdf_matches_statsmodels(cards):
    x, _ = _data(2, cards, 14)
    if cards == (3, 2, 6):  # all categorical: a single-level column and a bw > 1 column
        x[:, 1] = 1.0
        x[:, 2] = np.where(np.arange(14) < 11, 0.0, 5.0)  # 1 - bw < 0: negative densities
    q = np.concatenate([x[:4], _data(3, cards, 12)[0]])
    q[4, 0] = x[0, 0] + 0.9 if cards[0] == 0 else q[4, 0]  # far in a 'c' dim
    if cards[-1]:
        q[5:8, -1] = 1.0
    mask = np.ones(14, bool)
    k = _fit_jit(jnp.asarray(x), jnp.asarray(mask))
    sign, logabs = jax.jit(kde.density, static_argnums=2)(k, jnp.asarray(q), cards)
    sign, logabs = np.asarray(sign), np.asarray(logabs)
    want = np.array([np_pdf(np_kde(x, 1e-3), qi, cards) for qi in q])
    assert np.array_equal(np.isnan(want), np.isnan(sign))
    fin = np.isfinite(want)
    assert np.array_equal(np.isinf(want), np.isinf(logabs) & (logabs > 0))
    np.testing.assert_array_equal(np.sign(want[fin]), sign[fin])
    nz = fin & (want != 0)
    np.testing.assert_allclose(logabs[nz], np.log(np.abs(want[nz])), atol=2e-4, rtol=1e-5)
    if cards == (3, 2, 6):
        assert float(k.bw[2]) > 1
        assert np.isinf(want).any() and (np.nan_to_num(want) < 0).any()
    got = np.asarray(jax.jit(kde.pdf, static_argnums=2)(k, jnp.asarray(q), cards))
    ok = nz & (np.abs(want) > 1e-30) & (np.abs(want) < 1e30)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-4)


def test_pdf_single_level_times_underflow_is_nan_as_float64():
    """A single-level categorical gives inf kernels; times a Gaussian product that underflows
    float64 (the datum is far away at a tiny bandwidth) numpy gives NaN, else inf."""
    x, _ = _data(7, MIXED, 14)
    x[:, 1] = 0.0  # one level
    x[:, 0] = 0.3  # bw clipped to 1e-3
    x[0, 0] = 0.35
    q = np.repeat(x[:1], 4, 0)
    q[:, 1] = 1.0
    q[:, 0] = [0.3, 0.35, 0.9, 0.3]
    q[3, 1] = 0.0
    k = _fit_jit(jnp.asarray(x), jnp.asarray(np.ones(14, bool)))
    sign, logabs = jax.jit(kde.density, static_argnums=2)(k, jnp.asarray(q), MIXED)
    want = np.array([np_pdf(np_kde(x, 1e-3), qi, MIXED) for qi in q])
    assert np.isinf(want[:2]).all() and np.isnan(want[2]) and np.isfinite(want[3])
    assert np.array_equal(np.isnan(want), np.isnan(np.asarray(sign)))
    assert np.array_equal(np.isinf(want), np.isinf(np.asarray(logabs)))
    assert float(logabs[3]) == pytest.approx(np.log(want[3]), abs=2e-4)


def test_truncnorm_ppf_matches_scipy():
    m = np.array([0.0, 1e-3, 0.3, 0.5, 0.999, 1.0])
    sc = np.array([3e-3, 0.05, 0.5, 1.6])
    u = np.array([0.0, 1e-6, 0.01, 0.3, 0.5, 0.77, 0.99, 0.999999])
    mm, ss, uu = (a.astype(np.float32).astype(np.float64)
                  for a in np.meshgrid(m, sc, u, indexing="ij"))  # the float32 inputs
    got = jax.jit(kde.truncnorm_ppf)(jnp.asarray(uu, jnp.float32), jnp.asarray(mm, jnp.float32),
                                     jnp.asarray(ss, jnp.float32))
    want = stats.truncnorm.ppf(uu, -mm / ss, (1 - mm) / ss, loc=mm, scale=ss)
    np.testing.assert_allclose(np.asarray(got), want, atol=3e-5)
    assert (np.asarray(got) >= 0).all() and (np.asarray(got) <= 1).all()


def test_selection_loop_semantics():
    """`log_score` + `select` equal the literal loop on densities with inf, NaN, 0, < 0."""
    vals = [1e-40, 1e-3, 0.5, 2.0, 1e30, 0.0, -1.0, np.inf, -np.inf, np.nan]
    r = np.random.default_rng(0)

    def loop(g: np.ndarray, lv: np.ndarray) -> int:
        best, chosen = np.inf, -1
        for i in range(len(g)):
            with np.errstate(all="ignore"):
                val = max(1e-32, g[i]) / max(lv[i], 1e-32)
            if not np.isfinite(val) and np.isfinite(lv[i]):
                return i
            if val < best:
                best, chosen = val, i
        return chosen

    def split(a: np.ndarray) -> tuple:
        with np.errstate(divide="ignore"):
            return jnp.asarray(np.sign(a), jnp.float32), jnp.asarray(np.log(np.abs(a)),
                                                                      jnp.float32)

    g, lv = r.choice(vals, (600, 2)), r.choice(vals, (600, 2))  # 2 candidates per trial
    sel = jax.jit(jax.vmap(lambda *a: kde.select(*kde.log_score(*a))))
    got = np.asarray(sel(*split(g), *split(lv)))
    hits = set()
    for gi, li, c in zip(g, lv, got, strict=True):
        want = loop(gi, li)
        with np.errstate(all="ignore"):
            brk = want >= 0 and not np.isfinite(max(1e-32, gi[want]) / max(li[want], 1e-32))
        hits.add("break" if brk else "min" if want >= 0 else "none")
        assert c == want, (gi, li)
    assert hits == {"break", "min", "none"}


@functools.partial(jax.jit, static_argnums=(5, 6))
def _propose_jit(u: jax.Array, xb: jax.Array, lb: jax.Array, n: jax.Array, has_model: jax.Array,
                 cards: tuple, s: kde.KDESettings) -> tuple[jax.Array, jax.Array]:
    good, bad = kde.fit_models(xb, lb, n, s, cards)
    return kde.propose(u, good, bad, has_model, cards, s)


def _buffer(x: np.ndarray, loss: np.ndarray, size: int = 48) -> tuple[jax.Array, ...]:
    """A result buffer with empty slots (loss inf), as box_bohb keeps it."""
    xb = np.zeros((size, x.shape[1]))
    xb[:len(x)] = x
    lb = np.full(size, np.inf)
    lb[:len(x)] = loss
    return jnp.asarray(xb, jnp.float32), jnp.asarray(lb, jnp.float32), jnp.int32(len(x))


@pytest.mark.parametrize("cards,bad_constant", [(MIXED, False), (MIXED, True), (HNAG, False)])
def test_propose_matches_hpbandster_get_config(cards, bad_constant):
    s = kde.KDESettings(num_samples=16)
    n, d = 40, len(cards)
    x, loss = _data(4, cards, n, bad_constant)
    buf = _buffer(x, loss)
    prop = lambda u: _propose_jit(u, *buf, jnp.bool_(True), cards, s)
    paths = []
    r = np.random.default_rng(5)
    for _ in range(12):
        u = r.uniform(size=kde.n_uniforms(d, s.num_samples)).astype(np.float32)
        want, path = np_get_config(u, x, loss, cards, s)
        got, model = prop(jnp.asarray(u))
        paths.append(path)
        assert bool(model) == (path in ("break", "min")), path
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, err_msg=path)
    assert "random" in paths
    assert ("break" in paths) if bad_constant else ("min" in paths and "break" not in paths)


def test_no_model_gives_uniform_and_model_threshold():
    assert kde.KDESettings().n_model(8) == 18 and kde.KDESettings().n_model(3) == 8
    assert kde.model_min_points(8, 9, 15) == 18
    s = kde.KDESettings(num_samples=16)
    x, loss = _data(6, MIXED, 40)
    u = jnp.asarray(np.random.default_rng(0).uniform(size=kde.n_uniforms(5, 16)), jnp.float32)
    vec, model = _propose_jit(u, *_buffer(x, loss), jnp.bool_(False), MIXED, s)
    want = np.where(np.asarray(MIXED) == 0, u[1:6], np.floor(u[1:6] * np.asarray(MIXED)))
    assert not bool(model)
    np.testing.assert_allclose(np.asarray(vec), want, rtol=1e-6)
    assert math.isclose(kde.LOG_TINY, np.log(1e-32))
