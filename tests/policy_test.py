"""nhb.dha.policy: uniform start, the DA loss gradient's closed form, Gumbel draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nhb.dha import policy


def test_uniform_start():
    tau = policy.init_policy()
    np.testing.assert_allclose(policy.probabilities(tau), np.full(196, 1 / 196), rtol=1e-6)
    np.testing.assert_allclose(policy.entropy(tau), np.log(196), rtol=1e-6)
    assert abs(policy.MAX_ENTROPY - 5.278) < 1e-3


def test_da_loss_gradient_matches_closed_form():
    rng = np.random.default_rng(0)
    tau = jnp.asarray(rng.normal(0, 0.5, 196), jnp.float32)
    pairs = jnp.asarray(rng.integers(0, 196, 32), jnp.int32).at[:4].set(7)  # repeats
    losses = jnp.asarray(rng.uniform(0.5, 3.0, 32), jnp.float32)
    grad = jax.jit(jax.grad(policy.da_loss))(tau, losses, pairs)
    p = np.asarray(jax.nn.softmax(tau), np.float64)
    a, ell = np.asarray(pairs), np.asarray(losses, np.float64)
    closed = np.zeros(196)
    for k in range(32):  # dL/dtau_j = -(1/n) sum_k l_k p_{a_k} (delta_{a_k j} - p_j)
        closed -= ell[k] * p[a[k]] * ((np.arange(196) == a[k]) - p) / 32
    np.testing.assert_allclose(grad, closed, rtol=1e-4, atol=1e-9)
    # Masked samples do not count; the mean is over the valid ones.
    mask = jnp.arange(32) < 16
    g_mask = jax.grad(policy.da_loss)(tau, losses, pairs, mask)
    g_half = jax.grad(policy.da_loss)(tau, losses[:16], pairs[:16])
    np.testing.assert_allclose(g_mask, g_half, rtol=1e-5, atol=1e-10)
    # The loss does not differentiate through the per-sample losses.
    assert float(jax.grad(policy.da_loss, argnums=1)(tau, losses, pairs).sum()) == 0.0


def test_gumbel_argmax_follows_p_and_spread_depends_on_temperature():
    tau = jnp.zeros(196).at[:4].set(jnp.log(jnp.array([40.0, 20.0, 10.0, 5.0])))
    p = np.asarray(jax.nn.softmax(tau))
    keys = jax.random.split(jax.random.key(0), 20_000)
    q = jax.jit(jax.vmap(lambda k: policy.gumbel_draw(k, tau, 0.7)))(keys)
    np.testing.assert_allclose(np.asarray(q).sum(-1), 1.0, rtol=1e-5)
    counts = np.bincount(np.asarray(q.argmax(-1)), minlength=196)  # Gumbel-max trick
    for j in range(4):  # within 4 standard errors of the multinomial
        se = np.sqrt(20_000 * p[j] * (1 - p[j]))
        assert abs(counts[j] - 20_000 * p[j]) < 4 * se, (j, counts[j], 20_000 * p[j])
    # Effective support exp(mean H(q)) at the uniform policy (reference: ~30 at T=1, ~4 at
    # T=0.5, ~135 at T=2): one draw is much peakier than p itself.
    uni = policy.init_policy()
    spreads = []
    for temp in (0.5, 1.0, 2.0):
        qs = jax.vmap(lambda k, t=temp: policy.gumbel_draw(k, uni, t))(keys[:2000])
        h = -jnp.sum(qs * jnp.log(qs + 1e-30), -1)
        spreads.append(float(jnp.exp(jnp.mean(h))))
    assert 3 < spreads[0] < 4.5 and 26 < spreads[1] < 32 and 125 < spreads[2] < 145, spreads


def test_sample_pairs_follow_q_and_top_pairs():
    q = jnp.zeros(196).at[jnp.array([3, 100])].set(jnp.array([0.25, 0.75]))
    pairs = jax.jit(policy.sample_pairs, static_argnums=2)(jax.random.key(1), q, 4000)
    assert set(np.unique(np.asarray(pairs))) == {3, 100}
    assert abs(float(jnp.mean(pairs == 100)) - 0.75) < 0.03
    tau = jnp.zeros(196).at[14 * 2 + 5].set(3.0)
    (first, second, prob), *_ = policy.top_pairs(tau, 3)
    assert (first, second) == ("Rotate", "Color")
    np.testing.assert_allclose(prob, np.exp(3) / (np.exp(3) + 195), rtol=1e-5)


def test_policy_optimizer_moves_towards_hard_pairs():
    tau = policy.init_policy()
    opt = policy.policy_optimizer(100.0, momentum=0.9)
    state = opt.init(tau)
    pairs = jnp.arange(196, dtype=jnp.int32)
    losses = jnp.where(pairs == 50, 5.0, 1.0)  # pair 50 gives a higher training loss
    for _ in range(5):
        g = jax.grad(policy.da_loss)(tau, losses, pairs)
        upd, state = opt.update(g, state, tau)
        tau = tau + upd
    p = policy.probabilities(tau)
    assert int(jnp.argmax(p)) == 50 and float(policy.entropy(tau)) < np.log(196)
