"""Tests for REINFORCE: EMA baseline and the Adam policy-gradient step vs a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np

from nhb.search import rng
from nhb.search.reinforce import Reinforce, log_prob
from nhb.space import nhb2


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_init_and_sampling():
    s = Reinforce()
    p = s.default_params()
    st = s.init(jax.random.key(0), p)
    assert st.logits["cell"].shape == (6, 4) and st.logits["lr"].shape == (8,)
    assert float(jnp.abs(st.logits["cell"]).max()) < 0.01  # 1e-3 * N(0, 1)
    k = jax.random.key(3)
    cfg, epoch, _ = s.ask(k, st, p)
    u = rng.uniforms(k, 8)
    assert int(epoch) == 12
    assert int(cfg.lr) == int(rng.categorical(u[6], st.logits["lr"]))
    np.testing.assert_array_equal(cfg.cell, rng.categorical(u[:6], st.logits["cell"]))


def test_baseline_and_update_match_hand_computation():
    s = Reinforce()
    p = s.default_params()
    st = s.init(jax.random.key(1), p)
    tell = jax.jit(lambda st, c, r: s.tell(st, c, r, p))
    c1, c2 = nhb2.make([0, 1, 2, 3, 0, 1], 2, 5), nhb2.make([3, 3, 0, 0, 1, 2], 7, 0)
    lg0 = jax.tree.map(np.asarray, st.logits)
    # step 1: the baseline becomes r1, advantage 0: no change, but Adam's count advances
    st1 = tell(st, c1, jnp.float32(80.0))
    np.testing.assert_allclose(s.baseline(st1), 80.0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-9), st1.logits, lg0)
    # step 2: EMA (0.9) updated first, then -sum(log p) * (r - baseline) with Adam(0.01)
    r2 = 90.0
    base = (0.9 * 0.1 * 80.0 + 0.1 * r2) / (0.9 * 0.1 + 0.1)
    adv = r2 - base
    st2 = tell(st1, c2, jnp.float32(r2))
    np.testing.assert_allclose(s.baseline(st2), base, rtol=1e-6)
    onehots = {"cell": np.eye(4)[np.asarray(c2.cell)], "lr": np.eye(8)[7], "bs": np.eye(6)[0]}
    for name, oh in onehots.items():
        g = (_softmax(lg0[name]) - oh) * adv  # d(-log p * adv)/dlogits
        m = 0.1 * g / (1 - 0.9**2)  # Adam moments from g1 = 0, g2 = g at step 2
        v = 0.001 * g * g / (1 - 0.999**2)
        want = lg0[name] - 0.01 * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(st2.logits[name], want, rtol=1e-5, atol=1e-7)
    # the sampled config's log-probability rose
    assert float(log_prob(st2.logits, c2)) > float(log_prob(st1.logits, c2))


def test_nan_reward_skips_the_update():
    s = Reinforce()
    p = s.default_params()
    tell = jax.jit(lambda st, c, r: s.tell(st, c, r, p))
    st = tell(s.init(jax.random.key(2), p), nhb2.make([0] * 6, 0, 0), jnp.float32(70.0))
    st2 = tell(st, nhb2.make([1] * 6, 1, 1), jnp.float32(jnp.nan))
    jax.tree.map(np.testing.assert_array_equal, st2, st)
