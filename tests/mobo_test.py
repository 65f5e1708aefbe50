"""Tests for NAGO's multi-objective BO: USeMO acquisitions, Pareto search, HLP batches."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial
from scipy.stats import norm

from nhb.search import mobo
from nhb.search import selection as sel

D = 8
CFG = mobo.MOBOConfig()


# --- non_dominated -----------------------------------------------------------------------

def test_non_dominated_hand_cases():
    f = np.array([[1, 5], [2, 3], [2, 3], [3, 3], [4, 1], [np.nan, 0], [0, np.nan], [5, 1],
                  [1, 5]], np.float32)
    # [2,3] twice (duplicates: both kept), [3,3] tied in f2 but worse in f1 (dominated),
    # [5,1] tied with [4,1] in f2 (dominated), NaN rows never on the front nor dominating
    np.testing.assert_array_equal(np.flatnonzero(jax.jit(mobo.non_dominated)(f)),
                                  [0, 1, 2, 4, 8])
    g = np.array([[1, 1, 1], [0, 2, 2], [1, 1, 2], [2, 0, 3], [1, 1, 1]], np.float32)
    np.testing.assert_array_equal(np.asarray(mobo.non_dominated(g)),
                                  [True, True, False, True, True])
    np.testing.assert_array_equal(mobo.dominated_by(jnp.asarray(g)), [0, 0, 2, 0, 0])
    assert not np.any(mobo.non_dominated(np.full((3, 2), np.nan, np.float32)))


def test_non_dominated_matches_selection_pareto_front():
    rng = np.random.default_rng(0)
    res = rng.integers(0, 12, 300).astype(np.float32)  # many ties
    q = rng.integers(0, 12, 300).astype(np.float32)
    res[::37] = np.nan
    ours = np.asarray(jax.jit(mobo.non_dominated)(np.stack([res, -q], axis=1)))
    np.testing.assert_array_equal(ours, sel.pareto_front(res, q))


# --- acquisitions and beta ---------------------------------------------------------------

def test_acquisitions_match_closed_forms():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(50, 2)).astype(np.float32)
    std = rng.uniform(0.05, 2.0, (50, 2)).astype(np.float32)
    best = np.array([-0.5, 0.3], np.float32)
    beta = 2.7
    acq = jax.jit(mobo.acquisition, static_argnames="name")
    z = (best - 1e-3 - mean) / std
    ei = -(std * (z * norm.cdf(z) + norm.pdf(z)))  # acquisitions.py `ei`
    np.testing.assert_allclose(acq(mean, std, best, beta, name="ei"), ei, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(acq(mean, std, best, beta, name="ucb"), mean + beta * std,
                               rtol=1e-6)
    np.testing.assert_allclose(acq(mean, std, best, beta, name="lcb"), mean - beta * std,
                               rtol=1e-6, atol=1e-6)
    # EI's zero-std limit: -(best - xi - mean)^+
    out = acq(jnp.array([[0.0, 2.0]]), jnp.zeros((1, 2)), jnp.array([1.0, 1.0]), 1.0,
              name="ei")
    np.testing.assert_allclose(out, [[-(1.0 - 1e-3), 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match="valid choices"):
        mobo.acquisition(mean, std, best, beta, "pi")


@pytest.mark.parametrize(("t", "d"), [(1, 8), (5, 8), (100, 9), (37, 2)])
def test_beta_t_is_usemo_compute_beta(t, d):
    tau = 2 * math.log((pow(t, (d / 2) + 2) * pow(math.pi, 2)) / (3 * 0.05))  # USeMO
    np.testing.assert_allclose(float(jax.jit(mobo.beta_t, static_argnums=1)(t, d)),
                               math.sqrt(0.5 * tau), rtol=1e-6)


def test_beta_t_numbers():
    # t = 1: sqrt(log(pi^2 / 0.15)) = sqrt(4.18658); d = 8, t = 10: sqrt(4.18658 + 6 log 10)
    np.testing.assert_allclose(float(mobo.beta_t(1, 8)), 2.046113, atol=2e-6)
    np.testing.assert_allclose(float(mobo.beta_t(10, 8)), 4.242887, atol=2e-6)


def test_config_validation():
    with pytest.raises(ValueError, match=r"valid choices: \['ei', 'ucb', 'lcb'\]"):
        mobo.MOBOConfig(acquisition="EI")
    with pytest.raises(ValueError, match="batch_size"):
        mobo.MOBOConfig(batch_size=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CFG.batch_size = 4


# --- the Pareto search on problems with known fronts ------------------------------------

SA, SB = np.full(D, 0.3), np.array([0.2, 0.7, 0.7, 0.6, 0.7, 0.8, 0.7, 0.65])
SD = float(np.linalg.norm(SA - SB))


def _problem(which, x):
    """which 0: two spheres, Pareto set the segment SA-SB, front sqrt f1 + sqrt f2 = |SA-SB|;
    which 1: ZDT1, front f2 = 1 - sqrt(f1), f1 in [0, 1]."""
    sphere = jnp.stack([jnp.sum((x - SA) ** 2, -1), jnp.sum((x - SB) ** 2, -1)], -1)
    g = 1 + 9 * jnp.mean(x[:, 1:], -1)
    zdt1 = jnp.stack([x[:, 0], g * (1 - jnp.sqrt(x[:, 0] / g))], -1)
    return jnp.where(which == 0, sphere, zdt1)


search = jax.jit(mobo.pareto_search, static_argnames="config")


def _sphere_gd(f):
    """Generational distance to the true sphere front (mean and max), in units of SD^2."""
    t = np.linspace(0, 1, 20001)
    true = np.stack([(t * SD) ** 2, ((1 - t) * SD) ** 2], -1)
    dist = np.sqrt(((f[:, None, :] - true[None]) ** 2).sum(-1)).min(1) / SD ** 2
    return dist.mean(), dist.max()


def test_pareto_search_finds_the_sphere_front():
    seed = jax.random.uniform(jax.random.key(1), (20, D))
    x, f, front = search(jax.random.key(0), Partial(_problem, 0), seed, CFG)
    f = np.asarray(f)[np.asarray(front)]
    assert len(f) >= 100
    gd_mean, gd_max = _sphere_gd(f)
    assert gd_mean < 0.01 and gd_max < 0.1
    # spread: both ends and no big hole (position along the front: sqrt(f1) / SD)
    pos = np.sort(np.sqrt(f[:, 0]) / SD)
    assert pos[0] < 0.1 and pos[-1] > 0.9 and np.diff(pos).max() < 0.05
    # the Pareto SET too: points lie near the segment SA-SB
    xs = np.asarray(x)[np.asarray(front)]
    t = np.clip((xs - SA) @ (SB - SA) / SD ** 2, 0, 1)
    assert np.median(np.linalg.norm(xs - SA - t[:, None] * (SB - SA), axis=1)) < 0.05
    # the same number of uniform points is far off (the search does the work)
    u = np.asarray(jax.random.uniform(jax.random.key(2), (8512, D)))
    fu = np.asarray(_problem(0, u))
    assert _sphere_gd(fu[np.asarray(mobo.non_dominated(fu))])[0] > 5 * gd_mean


def test_pareto_search_finds_the_zdt1_front():
    seed = jax.random.uniform(jax.random.key(1), (20, D))
    _, f, front = search(jax.random.key(0), Partial(_problem, 1), seed, CFG)
    f = np.asarray(f)[np.asarray(front)]
    err = np.abs(f[:, 1] - (1 - np.sqrt(f[:, 0])))
    assert len(f) >= 100 and err.mean() < 0.01 and err.max() < 0.05
    f1 = np.sort(f[:, 0])
    assert f1[0] < 0.01 and f1[-1] > 0.95 and np.diff(f1).max() < 0.1


def test_crowding_distance_hand_case():
    f = jnp.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0], [9.0, 9.0]])
    cd = np.asarray(mobo.crowding_distance(f, jnp.array([True, True, True, True, False])))
    assert np.isinf(cd[0]) and np.isinf(cd[3]) and cd[4] == 0
    np.testing.assert_allclose(cd[1:3], [2 / 4 + 3 / 4, 3 / 4 + 2 / 4])


# --- propose_batch on a synthetic posterior ----------------------------------------------

def _synthetic(p, x):
    """Quadratic means scale_i ||x - a_i||^2; the same std for both, a bump at c."""
    mean = p["scale"] * jnp.sum((x[:, None, :] - p["a"][None]) ** 2, axis=-1)
    bump = jnp.exp(-jnp.sum((x - p["c"]) ** 2, axis=-1) / (2 * p["w"] ** 2))
    std = p["s0"] + p["s1"] * bump
    return mean, jnp.broadcast_to(std[:, None], mean.shape)


def _params(a, scale, c, s0=0.05, s1=0.5, w=0.25):
    return {"a": jnp.asarray(a, jnp.float32), "scale": jnp.asarray(scale, jnp.float32),
            "c": jnp.asarray(c, jnp.float32), "s0": jnp.float32(s0), "s1": jnp.float32(s1),
            "w": jnp.float32(w)}


MAIN = _params([SA, SB], [1.0, 2.0], (SA + SB) / 2)


def _observed(params, n=30, extra=None):
    x = np.random.default_rng(3).uniform(size=(n, D)).astype(np.float32)
    if extra is not None:
        x = np.concatenate([x, np.asarray(extra, np.float32)[None]])
    y = np.array(_synthetic(params, jnp.asarray(x))[0])
    y[4] = np.nan  # a failed evaluation
    return x, y


def _numpy_batch(info, b):
    """The greedy HLP batch recomputed in numpy (float64) from the candidates' posterior."""
    xc, mean, std = (np.asarray(info[k], np.float64) for k in ("candidates", "mean", "std"))
    best, lip = np.asarray(info["best"], np.float64), np.asarray(info["lipschitz"], np.float64)
    beta = float(info["beta"])
    ok = np.asarray(info["front"]) & np.asarray(info["fresh"])
    vol = np.prod(2 * beta * std, axis=1)
    picks = [int(np.argmax(np.where(ok, vol, -np.inf)))]
    for _ in range(1, b):
        r = (mean[picks] - best) / lip + std[picks] / lip  # [k, m]
        dist = np.linalg.norm(xc[:, None, :] - xc[picks][None], axis=-1)  # [n, k]
        h = np.prod(dist[:, :, None] / r[None], axis=1)  # [n, m]
        with np.errstate(divide="ignore"):
            phi = np.linalg.norm(np.stack([h, np.ones_like(h)]), -5, axis=0)
        score = np.where(ok, vol * np.prod(phi, axis=1), -np.inf)
        score[picks] = -np.inf
        picks.append(int(np.argmax(score)))
    return np.array(picks), vol


def _min_pair(x):
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return dist[np.triu_indices(len(x), 1)].min()


def test_propose_batch_penalised_batch():
    post = Partial(_synthetic, MAIN)
    x_obs, y_obs = _observed(MAIN)
    xb, info = mobo.propose_batch(jax.random.key(0), post, x_obs, y_obs, 3, CFG)
    xb, info = np.asarray(xb), jax.tree.map(np.asarray, info)
    assert xb.shape == (8, D) and np.all((xb >= 0) & (xb <= 1))
    assert _min_pair(xb) > 1e-3  # 8 distinct points
    assert info["from_front"].all() and info["n_front"] >= 50
    np.testing.assert_allclose(info["best"], np.nanmin(y_obs, axis=0))  # NaN row ignored
    np.testing.assert_allclose(info["beta"], mobo.beta_t(3, D))
    mean, std = _synthetic(MAIN, jnp.asarray(info["candidates"]))
    np.testing.assert_allclose(info["std"], std, rtol=1e-6)
    np.testing.assert_allclose(info["mean"], mean, rtol=1e-6)
    # the first point is the unpenalised USeMO choice; all picks follow the HLP greedy rule
    picks, vol = _numpy_batch(info, 8)
    np.testing.assert_allclose(info["volume"], vol, rtol=1e-5)
    np.testing.assert_array_equal(info["indices"], picks)
    np.testing.assert_array_equal(xb, info["candidates"][picks])
    # without the penaliser the top 8 volumes crowd around the bump; the batch spreads out
    ok = info["front"] & info["fresh"]
    top = np.argsort(np.where(ok, info["volume"], -np.inf))[::-1][:8]
    assert top[0] == picks[0]
    assert _min_pair(xb) > 3 * _min_pair(info["candidates"][top])
    # L_i = max ||2 scale_i (x - a_i)|| over the box: at the farthest corner
    far = np.sqrt(np.sum(np.maximum(MAIN["a"], 1 - MAIN["a"]) ** 2, axis=1))
    np.testing.assert_allclose(info["lipschitz"], 2 * np.asarray(MAIN["scale"]) * far,
                               rtol=1e-3)
    # same key -> same batch; another key -> another search
    xb2, _ = mobo.propose_batch(jax.random.key(0), post, x_obs, y_obs, 3, CFG)
    np.testing.assert_array_equal(xb, np.asarray(xb2))
    xb3, _ = mobo.propose_batch(jax.random.key(1), post, x_obs, y_obs, 3, CFG)
    assert not np.array_equal(xb, np.asarray(xb3))


def test_propose_batch_excludes_evaluated_points():
    c = np.asarray(MAIN["c"])
    post = Partial(_synthetic, MAIN)
    x_obs, y_obs = _observed(MAIN, extra=c)  # c: largest std and on the front (see below)
    xb, info = mobo.propose_batch(jax.random.key(0), post, x_obs, y_obs, 3, CFG)
    xb, info = np.asarray(xb), jax.tree.map(np.asarray, info)
    at_c = np.flatnonzero(np.max(np.abs(info["candidates"] - c), axis=1) <= 1e-6)
    assert len(at_c) == 1  # the observed point is a candidate ...
    k = at_c[0]
    assert info["front"][k] and not info["fresh"][k]  # ... on the front, marked evaluated
    assert k == np.argmax(np.where(info["front"], info["volume"], -np.inf))  # would win
    assert np.max(np.abs(xb - c), axis=1).min() > 1e-6  # but is never proposed
    picks, _ = _numpy_batch(info, 8)
    np.testing.assert_array_equal(info["indices"], picks)


def test_propose_batch_small_front_falls_back_to_archive():
    # identical objectives and a constant std: the EI front is (almost) one point
    same = _params([SA, SA], [1.0, 1.0], SA, s1=0.0)
    x_obs, y_obs = _observed(same)
    xb, info = mobo.propose_batch(jax.random.key(0), Partial(_synthetic, same), x_obs, y_obs,
                                  3, CFG)
    xb, info = np.asarray(xb), jax.tree.map(np.asarray, info)
    n_front = int(np.sum(info["front"] & info["fresh"]))
    assert 1 <= n_front < 8
    np.testing.assert_array_equal(info["from_front"], np.arange(8) < n_front)
    assert _min_pair(xb) > 1e-3
    # the penaliser (volume is constant here) pushes later points away from the first
    d0 = np.linalg.norm(xb[1:] - xb[0], axis=1)
    near = np.sort(np.linalg.norm(info["candidates"] - xb[0], axis=1))[1:8]
    assert d0.min() > near.max()


def test_propose_batch_input_checks():
    post = Partial(_synthetic, MAIN)
    x = np.full((3, D), 0.5, np.float32)
    with pytest.raises(ValueError, match="no finite row"):
        mobo.propose_batch(jax.random.key(0), post, x, np.full((3, 2), np.nan), 1, CFG)
    with pytest.raises(ValueError, match="t counts from 1"):
        mobo.propose_batch(jax.random.key(0), post, x, np.zeros((3, 2)), 0, CFG)
    with pytest.raises(ValueError, match="shapes"):
        mobo.propose_batch(jax.random.key(0), post, x, np.zeros((2, 2)), 1, CFG)
