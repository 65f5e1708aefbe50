"""Tests for REINFORCE: EMA baseline and the Adam policy-gradient step vs a hand computation."""

import jax
import jax.numpy as jnp
import numpy as np

from nhb.search import rng
from nhb.search.reinforce import Reinforce, ReinforceParams, log_prob
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


# ----------------------------------------------------------------------------- sub-spaces

POW4 = 4 ** np.arange(5, -1, -1)


def _space():
    from nhb.bench.subspace import SearchSpace

    cells = [[0, 1, 2, 3, 0, 1], [1, 1, 2, 3, 0, 1], [3, 3, 3, 3, 3, 3], [2, 0, 1, 1, 2, 2],
             [0, 0, 0, 0, 0, 0]]
    return SearchSpace.make([int(np.dot(c, POW4)) for c in cells], lrs=(1, 3, 6), bss=(0, 4))


def _logits(seed: int) -> dict:
    r = np.random.default_rng(seed)
    return {"cell": r.normal(0, 1, (6, 4)).astype(np.float32),
            "lr": r.normal(0, 1, 8).astype(np.float32), "bs": r.normal(0, 1, 6).astype(np.float32)}


def np_restricted_policy(lg: dict, space) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force: product-policy probabilities of the covered cells / allowed lrs / bss,
    renormalised over the space."""
    p = np.array([np.prod([_softmax(lg["cell"][e])[d[e]] for e in range(6)])
                  for d in (space.cells[:, None] // POW4) % 4])
    lr = _softmax(lg["lr"])[list(space.lrs)]
    bs = _softmax(lg["bs"])[list(space.bss)]
    return p / p.sum(), lr / lr.sum(), bs / bs.sum()


def test_restricted_log_prob_and_its_gradient_are_exact():
    from nhb.search.reinforce import cell_log_probs

    sp = _space()
    lg = _logits(0)
    pc, plr, pbs = np_restricted_policy(lg, sp)
    cfg = nhb2.make([1, 1, 2, 3, 0, 1], 6, 4)  # the 2nd covered cell (sorted), lr 6, bs 4
    k = int(np.searchsorted(sp.cells, int(np.dot([1, 1, 2, 3, 0, 1], POW4))))
    lp = jax.jit(lambda lg, c: log_prob(lg, c, sp))(lg, cfg)
    np.testing.assert_allclose(lp, np.log(pc[k] * plr[2] * pbs[1]), rtol=1e-5)
    # d log pi / d logit_{e,o} = 1[c_e = o] - E_pi[1[c'_e = o]] (expectation over covered cells)
    g = jax.jit(jax.grad(lambda lg: log_prob(lg, cfg, sp)))(lg)
    digits = (sp.cells[:, None] // POW4) % 4
    want = np.eye(4)[np.asarray(cfg.cell)] - np.einsum("c,ceo->eo", pc, np.eye(4)[digits])
    np.testing.assert_allclose(g["cell"], want, atol=1e-5)
    want_lr = np.zeros(8)
    want_lr[list(sp.lrs)] = -plr
    want_lr[6] += 1
    np.testing.assert_allclose(g["lr"], want_lr, atol=1e-6)  # 0 for the disallowed lrs
    # with every cell listed the restricted cell law is the product itself (Z = 1)
    all_digits = (np.arange(4096)[:, None] // POW4) % 4
    full = jax.jit(cell_log_probs)(lg["cell"], jnp.asarray(all_digits))
    lsm = lg["cell"] - np.log(np.exp(lg["cell"]).sum(-1, keepdims=True))
    np.testing.assert_allclose(full, lsm[np.arange(6), all_digits].sum(-1), atol=1e-5)
    assert abs(float(log_prob(lg, cfg)) - float(log_prob(lg, cfg, sp.full()))) == 0


def test_restricted_sampling_law_is_exact():
    from nhb.search.reinforce import sample_policy

    sp = _space()
    lg = _logits(1)
    pc, plr, _ = np_restricted_policy(lg, sp)
    n = 40_000
    grid = (jnp.arange(n, dtype=jnp.float32) + 0.5) / n
    us = jnp.tile(jnp.float32(0.5), (n, 8)).at[:, 0].set(grid).at[:, 6].set(grid)
    cfg = jax.jit(jax.vmap(lambda u: sample_policy(u, lg, sp)))(us)
    idx = np.searchsorted(sp.cells, np.asarray(nhb2.cell_index(cfg.cell)))
    np.testing.assert_allclose(np.bincount(idx, minlength=5) / n, pc, atol=3 / n)
    lr = np.searchsorted(sp.lrs, np.asarray(cfg.lr))
    np.testing.assert_allclose(np.bincount(lr, minlength=3) / n, plr, atol=3 / n)
    assert bool(jnp.all(sp.contains(cfg)))
    st = Reinforce(space=sp).init(jax.random.key(0), ReinforceParams())
    ask = jax.jit(jax.vmap(lambda k: Reinforce(space=sp).ask(k, st, ReinforceParams())[0]))
    assert bool(jnp.all(sp.contains(ask(jax.random.split(jax.random.key(1), 256)))))
