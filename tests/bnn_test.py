"""nhb.search.bnn: pybnn's Bohamiann loss, priors, batching, sample bookkeeping, predict."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from nhb.search import bnn, sghmc

TINY = bnn.BNNConfig(hidden=(4, 3), num_burn_in_steps=3, keep_every=2, num_samples=3,
                     batch_size=4)


def np_forward(params, x):
    h = np.asarray(x, np.float64)
    layers = params["layers"]
    for layer in layers[:-1]:
        h = np.tanh(h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64))
    out = h @ np.asarray(layers[-1]["w"], np.float64) + np.asarray(layers[-1]["b"], np.float64)
    if "log_var" in params:  # AppendLayer
        out = np.concatenate([out, float(params["log_var"][0, 0]) * np.ones_like(out)], axis=1)
    return out


def np_pybnn_loss(params, x, y, n_data):
    """bohamiann.py:268-271 with priors.py, on the rows actually in the batch (float64)."""
    out = np_forward(params, x)
    mean, log_var = out[:, :1], out[:, 1:2]
    inv = 1.0 / (np.exp(log_var) + 1e-16)
    mse = (y.reshape(-1, 1) - mean) ** 2
    nll = -np.sum(np.sum(-mse * (0.5 * inv) - 0.5 * log_var, axis=1)) / x.shape[0]
    log_var_prior = np.mean(np.sum(-((log_var - np.log(1e-6)) ** 2) / (2.0 * 0.01)
                                   - 0.5 * np.log(0.01), axis=1))
    leaves = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    weight_prior = sum(np.sum(-0.5 * p**2) for p in leaves) / sum(p.size for p in leaves)
    return nll - log_var_prior / n_data - weight_prior / n_data


@pytest.mark.parametrize("het", [True, False])
def test_loss_matches_pybnn(het):
    config = dataclasses.replace(TINY, heteroscedastic=het)
    params = bnn.init_params(jax.random.PRNGKey(1), config, 3)
    params = jax.tree.map(lambda p: p * 3.0, params)  # push log-variances away from 0
    rng = np.random.RandomState(0)
    x, y = rng.randn(6, 3).astype(np.float32), rng.randn(6).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 1, 0], bool)  # a short batch padded to 6 rows
    loss = jax.jit(bnn.loss, static_argnames=("n_data", "config"))
    got = loss(params, x, y, mask, n_data=57, config=config)
    want = np_pybnn_loss(params, x[mask], y[mask], 57)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert ("log_var" in params) != het  # AppendLayer only for the homoscedastic model


def test_init_is_torch_linear_default():
    config = bnn.BNNConfig(hidden=(200,), heteroscedastic=False)
    params = bnn.init_params(jax.random.PRNGKey(0), config, 50)
    first, last = params["layers"]
    for arr, fan_in in ((first["w"], 50), (first["b"], 50), (last["w"], 200)):
        a = np.asarray(arr).ravel() * math.sqrt(fan_in)  # U(-1, 1) after scaling
        assert np.abs(a).max() <= 1.0 and stats.kstest(a, "uniform", (-1, 2)).pvalue > 1e-3
    assert first["w"].shape == (50, 200) and last["w"].shape == (200, 1)
    np.testing.assert_allclose(params["log_var"], [[math.log(1e-3)]], rtol=1e-6)


def test_minibatches_are_reshuffled_epochs_with_a_short_last_batch():
    idx, mask = jax.jit(bnn.minibatches, static_argnums=(1, 2, 3))(
        jax.random.PRNGKey(0), 10, 4, 9)  # 3 batches per epoch: 4, 4, 2
    idx, mask = np.asarray(idx), np.asarray(mask)
    assert idx.shape == mask.shape == (9, 4)
    np.testing.assert_array_equal(mask.sum(1), [4, 4, 2] * 3)
    epochs = [np.sort(idx[3 * e:3 * e + 3][mask[3 * e:3 * e + 3]]) for e in range(3)]
    for e in epochs:
        np.testing.assert_array_equal(e, np.arange(10))
    assert not np.array_equal(idx[:3], idx[3:6])
    idx2, mask2 = bnn.minibatches(jax.random.PRNGKey(0), 3, 20, 2)  # batch = min(20, n)
    assert idx2.shape == (2, 3) and bool(mask2.all())


def test_predictive_moments_formula():
    rng = np.random.RandomState(0)
    out = rng.randn(7, 5, 2)
    mean, var = bnn.predictive_moments(jnp.asarray(out, jnp.float32))
    m = out[:, :, 0].mean(0)
    v = np.mean((out[:, :, 0] - m) ** 2 + np.exp(out[:, :, 1]), axis=0)
    np.testing.assert_allclose(mean, m, rtol=1e-5)
    np.testing.assert_allclose(var, v, rtol=1e-5)


@pytest.mark.parametrize("het", [True, False])
def test_predict_denormalises_like_pybnn(het):
    config = dataclasses.replace(TINY, heteroscedastic=het)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    params = jax.vmap(lambda k: bnn.init_params(k, config, 2))(keys)
    post = bnn.BNNPosterior(params=params, x_mean=jnp.array([0.5, -1.0]),
                            x_std=jnp.array([2.0, 0.5]), y_mean=jnp.array(3.0),
                            y_std=jnp.array(4.0), steps=jnp.arange(4))
    x = np.random.RandomState(1).randn(5, 2).astype(np.float32)
    mean, var = bnn.predict(post, x)
    xn = (x - np.array([0.5, -1.0])) / np.array([2.0, 0.5])
    out = np.stack([np_forward(jax.tree.map(lambda a, i=i: a[i], params), xn) for i in range(4)])
    m = out[:, :, 0].mean(0)
    v = np.mean((out[:, :, 0] - m) ** 2 + np.exp(out[:, :, 1]), axis=0)
    np.testing.assert_allclose(mean, m * 4.0 + 3.0, rtol=1e-5)
    np.testing.assert_allclose(var, v * 16.0, rtol=1e-5)


def test_kept_steps_rule_and_step_count():
    def pybnn_rule(num_steps, burn, keep):  # bohamiann.py:310 over enumerate(islice(...))
        return [s for s in range(num_steps) if s > burn and (s - burn) % keep == 0]

    assert TINY.num_steps == 3 + 2 * 3 + 1
    np.testing.assert_array_equal(bnn.kept_steps(TINY), [5, 7, 9])
    paper = bnn.BNNConfig()
    assert paper.num_steps == 4001 and len(bnn.kept_steps(paper)) == 100
    default = bnn.BNNConfig.pybnn_default()
    assert default.hidden == (50, 50) and not default.heteroscedastic
    np.testing.assert_array_equal(bnn.kept_steps(default), pybnn_rule(13000, 3000, 100))
    assert bnn.kept_steps(default)[-1] == default.num_steps - 1 == 12900


TINY2 = dataclasses.replace(TINY, num_chains=2)


def tiny_data(n: int):
    rng = np.random.RandomState(0)
    return rng.rand(n, 2).astype(np.float32), rng.randn(n).astype(np.float32)


def test_fit_keeps_the_states_of_a_plain_step_loop():
    """fit's scan == a Python loop of pybnn's steps keeping what pybnn's rule keeps; chains
    are pooled chain-major."""
    x, y = tiny_data(10)
    key = jax.random.PRNGKey(5)
    post = bnn.fit(key, TINY2, x, y)
    np.testing.assert_array_equal(post.steps, [5, 7, 9, 5, 7, 9])  # kept_steps, per chain
    # chain 0 by hand, with fit's key derivation and normalisation
    xn = jnp.asarray((x - x.mean(0)) / x.std(0))
    yn = jnp.asarray((y - y.mean()) / y.std())
    k_init, k_batch, k_noise = jax.random.split(jax.random.split(key, 2)[0], 3)
    flat, unravel = jax.flatten_util.ravel_pytree(bnn.init_params(k_init, TINY, 2))
    idx, mask = bnn.minibatches(k_batch, 10, TINY.batch_size, TINY.num_steps)
    noise_keys = jax.random.split(k_noise, TINY.num_steps)
    grad = jax.jit(jax.grad(lambda f, i, m: bnn.loss(unravel(f), xn[i], yn[i], m, 10, TINY)))
    step = jax.jit(sghmc.step, static_argnames="hyper")
    state, kept = sghmc.init(flat), []
    for s in range(TINY.num_steps):
        flat, state = step(noise_keys[s], flat, state, grad(flat, idx[s], mask[s]),
                           hyper=TINY.hyper(10))
        if s > TINY.num_burn_in_steps and (s - TINY.num_burn_in_steps) % TINY.keep_every == 0:
            kept.append(np.asarray(flat))
    got = np.asarray(jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(post.params))
    np.testing.assert_allclose(got[:3], np.stack(kept), rtol=1e-4, atol=1e-5)
    assert TINY.hyper(10).scale_grad == 10.0  # scale_grad = N
    assert not np.allclose(got[:3], got[3:])  # the second chain is another chain
    assert np.ptp(got[:3], axis=0).max() > 0  # samples differ


def test_table1_protocol():
    x, y = tiny_data(13)  # 20% test: 3 test, 10 train points per split
    key = jax.random.PRNGKey(2)
    res = bnn.table1(key, x, y, n_splits=2, config=TINY2)
    k_split, k_fit = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, 13))(jax.random.split(k_split, 2))
    fit_keys = jax.random.split(k_fit, 2)
    for i in range(2):
        test, train = np.asarray(perms[i, :3]), np.asarray(perms[i, 3:])
        mean, var = bnn.predict(bnn.fit(fit_keys[i], TINY2, x[train], y[train]), x[test])
        np.testing.assert_allclose(res["het"]["nll_splits"][i],
                                   bnn.gaussian_nll(mean, var, y[test]), rtol=1e-4)
        np.testing.assert_allclose(res["het"]["rmse_splits"][i], bnn.rmse(mean, y[test]),
                                   rtol=1e-4)
    for name in ("het", "hom"):
        assert res[name]["nll"] == pytest.approx(np.median(res[name]["nll_splits"]))
        assert res[name]["rmse"] == pytest.approx(np.median(res[name]["rmse_splits"]))
    assert res["hom"]["nll_splits"] != res["het"]["nll_splits"]
    assert bnn.table1(key, x, y, n_splits=2, config=TINY2) == res  # same key, same numbers


def test_metrics():
    rng = np.random.RandomState(0)
    mean, var, y = rng.randn(9), rng.rand(9) + 0.1, rng.randn(9)
    want = -np.mean(stats.norm.logpdf(y, mean, np.sqrt(var)))
    np.testing.assert_allclose(bnn.gaussian_nll(mean, var, y), want, rtol=1e-5)
    np.testing.assert_allclose(bnn.rmse(mean, y), np.sqrt(np.mean((y - mean) ** 2)), rtol=1e-5)


def test_heteroscedastic_beats_homoscedastic_on_growing_noise():
    """y = sin(3x) + noise whose std grows from 0.02 to 1.22: 150 training points, 600 test
    points (many, so that the NLL difference is not split noise)."""
    rng = np.random.RandomState(0)
    x = rng.uniform(0.0, 2.0, (750, 1)).astype(np.float32)
    std = 0.02 + 0.3 * x[:, 0] ** 2
    y = (np.sin(3.0 * x[:, 0]) + std * rng.randn(750)).astype(np.float32)
    floor = float(np.sqrt(np.mean(std[150:] ** 2)))
    base = bnn.BNNConfig(num_burn_in_steps=2000, keep_every=10, num_samples=50)
    scores = {}
    for het in (True, False):
        config = dataclasses.replace(base, heteroscedastic=het)
        post = bnn.fit(jax.random.PRNGKey(0), config, x[:150], y[:150])
        mean, var = bnn.predict(post, x[150:])
        scores[het] = float(bnn.gaussian_nll(mean, var, y[150:])), float(bnn.rmse(mean, y[150:]))
        assert 0.85 * floor < scores[het][1] < 1.2 * floor, (het, scores[het], floor)
        again = bnn.fit(jax.random.PRNGKey(0), config, x[:150], y[:150])
        for a, b in zip(jax.tree.leaves(post), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(a, b)  # same key, same samples
    assert scores[True][0] < scores[False][0] - 1.0, scores
    other = bnn.fit(jax.random.PRNGKey(1), config, x[:150], y[:150])
    assert not np.allclose(other.params["log_var"], post.params["log_var"])


def test_input_validation_names_the_expected_shapes():
    x, y = np.zeros((5, 2), np.float32), np.arange(5.0, dtype=np.float32)
    with pytest.raises(ValueError, match=r"x must be 2-D \[n, d\]"):
        bnn.fit(jax.random.PRNGKey(0), TINY, x[:, 0], y)
    with pytest.raises(ValueError, match=r"y must have shape \[n\] or \[n, 1\] with n = .* 5"):
        bnn.fit(jax.random.PRNGKey(0), TINY, x, y[:4])
    with pytest.raises(ValueError, match=r"at least 2 training points"):
        bnn.fit(jax.random.PRNGKey(0), TINY, x[:1], y[:1])
    post = bnn.BNNPosterior(params=None, x_mean=jnp.zeros(2), x_std=jnp.ones(2),
                            y_mean=jnp.array(0.0), y_std=jnp.array(1.0), steps=jnp.zeros(1))
    with pytest.raises(ValueError, match=r"x must be 2-D \[m, 2\]"):
        bnn.predict(post, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="keep_every must be >= 1"):
        bnn.BNNConfig(keep_every=0)
    with pytest.raises(ValueError, match="leaves 1 of 5 points"):
        bnn.table1(jax.random.PRNGKey(0), x, y, test_fraction=0.8)
