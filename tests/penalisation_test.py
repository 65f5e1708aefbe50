"""Tests for hard local penalisation: Lipschitz estimate, cone radii, the HLP penaliser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from nhb.search import penalisation as pen

D = 8
A = np.linspace(0.2, 0.9, D)  # slope of the sine objective
C = np.linspace(0.5, 1.5, D)  # amplitude of its sine terms
Z = np.linspace(0.25, 0.75, D)  # where each sine term's gradient peaks (interior)
W = 4.0  # frequency: one peak of cos(W (x - z)) inside [0, 1]


def _known(scale, x):
    """4 objectives with known max ||grad||: sine (interior max), cubic (corner), two slopes."""
    sine = x @ A + jnp.sum(C * jnp.sin(W * (x - Z)) / W, axis=-1)
    cubic = jnp.sum(x ** 3, axis=-1)
    tiny = scale[0] * jnp.sum(x, axis=-1)  # ||grad|| = scale sqrt(d)
    small = scale[1] * x[:, 0]  # ||grad|| = scale
    mean = jnp.stack([sine, cubic, tiny, small], axis=-1)
    return mean, jnp.ones_like(mean)


lipschitz = jax.jit(pen.lipschitz_constants, static_argnames=("d", "restarts", "steps"))


def test_lipschitz_known_max_and_flat_fallback():
    post = Partial(_known, jnp.array([1e-9, 1e-6]))
    lip, arg = lipschitz(jax.random.key(0), post, d=D)
    lip, arg = np.asarray(lip), np.asarray(arg)
    np.testing.assert_allclose(lip[0], np.sqrt(np.sum((A + C) ** 2)), rtol=1e-3)
    np.testing.assert_allclose(arg[0], Z, atol=0.02)
    np.testing.assert_allclose(lip[1], 3 * np.sqrt(D), rtol=1e-4)  # corner (1, ..., 1)
    np.testing.assert_allclose(arg[1], np.ones(D), atol=1e-6)
    assert lip[2] == pen.LIPSCHITZ_FALLBACK  # 2.8e-9 < 1e-7: flat model
    np.testing.assert_allclose(lip[3], 1e-6, rtol=1e-3)  # above 1e-7: kept
    # the 1000 screened points alone (no ascent) miss the interior maximum by far more than rtol
    x = np.random.default_rng(0).uniform(size=(1000, D))
    rand_best = np.max(np.linalg.norm(A + C * np.cos(W * (x - Z)), axis=1))
    assert rand_best < 0.99 * lip[0]


def test_lipschitz_same_key_same_value():
    post = Partial(_known, jnp.array([1e-9, 1e-6]))
    a = np.asarray(lipschitz(jax.random.key(3), post, d=D)[0])
    b = np.asarray(lipschitz(jax.random.key(3), post, d=D)[0])
    np.testing.assert_array_equal(a, b)


class _FakeSurrogate:
    """predict(x) -> (mu [n, 1], var [n, 1]) of a fixed quadratic, as the reference's GP."""

    def predict(self, x):
        x = np.atleast_2d(x)
        mu = np.sum((x - 0.4) ** 2, axis=1, keepdims=True) - 0.3
        var = (0.05 + 0.1 * x[:, :1]) ** 2
        return mu, var


class _FakeAcq:
    def evaluate(self, x):
        return 1.0 + np.atleast_2d(x)[:, 0]


def _reference_hlp(surrogate, acq, x_batch, L, best, x):
    """Literal transcription of HardMinAwareConeAcquisition (rubinxin/asynchronous-BO,
    bayesopt/acquisition.py:437-551), transform None as PLAyBOOK uses it."""
    # _cone_function_precompute
    mu, var = surrogate.predict(x_batch)
    r_mu = (mu.flatten() - best) / L
    r_std = np.sqrt(var.flatten()) / L
    # _penalized_acquisition
    fval = acq.evaluate(x)
    fval = fval + 1e-50
    # _cone_function
    x_norm = np.sqrt(np.square(
        np.atleast_2d(x)[:, None, :] - np.atleast_2d(x_batch)[None, :, :]).sum(-1))
    h_vals = (1 / (r_mu + r_std) * (x_norm + 0)).prod(-1)
    h_vals = h_vals.reshape([1, -1])
    with np.errstate(divide="ignore"):
        clipped_h_vals = np.linalg.norm(
            np.concatenate((h_vals, np.ones(h_vals.shape)), axis=0), -5, axis=0)
    fval *= clipped_h_vals
    return fval


def test_hlp_matches_reference_code_on_hand_points():
    sur, acq = _FakeSurrogate(), _FakeAcq()
    # batch: mu above M, mu below M - sigma (negative radius), mu a little below M
    x_batch = np.array([[0.9, 0.1], [0.4, 0.4], [0.1, 0.8]])
    best, lip = -0.1, 2.0
    x = np.array([[0.9, 0.1], [0.5, 0.5], [0.0, 0.0], [1.0, 1.0], [0.42, 0.38], [0.1, 0.75],
                  [0.3, 0.6]])
    ref = _reference_hlp(sur, acq, x_batch, lip, best, x)
    mu_b, var_b = sur.predict(x_batch)
    radius = pen.cone_radii(jnp.asarray(mu_b), jnp.sqrt(jnp.asarray(var_b)), jnp.array([best]),
                            jnp.array([lip]))
    assert float(radius[1, 0]) < 0  # the negative-radius case is exercised
    phi = jax.jit(pen.hlp_penaliser)(jnp.asarray(x), jnp.asarray(x_batch), radius,
                                     jnp.ones(3, bool))
    ours = acq.evaluate(x) * np.asarray(phi[:, 0])
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-12)
    assert ours[0] == 0.0  # at a batch point
    assert 0 < ref.min(initial=1.0, where=ref > 0) < 0.5 * ref.max()  # penalties differ


def test_hlp_masked_rows_and_empty_batch():
    x = jnp.array([[0.2, 0.2], [0.7, 0.1]])
    xb = jnp.array([[0.2, 0.2], [0.9, 0.9], [0.0, 0.5]])
    r = jnp.array([[0.3, 1.0], [0.5, 2.0], [0.4, 0.1]])
    fn = jax.jit(pen.hlp_penaliser)
    np.testing.assert_array_equal(fn(x, xb, r, jnp.zeros(3, bool)), np.ones((2, 2)))
    # rows left out equal the penaliser of the smaller batch
    np.testing.assert_allclose(fn(x, xb, r, jnp.array([False, True, True])),
                               fn(x, xb[1:], r[1:], jnp.ones(2, bool)), rtol=1e-6)
    assert float(fn(x, xb, r, jnp.ones(3, bool))[0, 0]) == 0.0


@pytest.mark.parametrize("p", [-5.0, -2.0])
def test_soft_min_one_is_numpy_p_norm(p):
    a = np.array([0.0, 1e-20, 1e-3, 0.3, 1.0, 1.7, 40.0, 1e12, 1e30, np.inf, -0.5, -3.0])
    with np.errstate(divide="ignore", over="ignore"):
        ref = np.linalg.norm(np.stack([a, np.ones_like(a)]), p, axis=0)
    ours = np.asarray(jax.jit(pen.soft_min_one, static_argnums=1)(jnp.asarray(a, jnp.float32), p))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-30)


def test_cone_radii_formula():
    mean = jnp.array([[1.0, 5.0], [0.2, 3.0]])
    std = jnp.array([[0.5, 1.0], [0.1, 2.0]])
    r = pen.cone_radii(mean, std, jnp.array([0.4, 4.0]), jnp.array([2.0, 0.5]))
    np.testing.assert_allclose(r, [[(0.6 + 0.5) / 2, (1 + 1) / 0.5],
                                   [(-0.2 + 0.1) / 2, (-1 + 2) / 0.5]], rtol=1e-6)
