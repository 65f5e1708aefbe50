"""Tests for regularized evolution: population filling, tournament sampling, aging, mutation."""

import jax
import jax.numpy as jnp
import numpy as np

from nhb.search import rng
from nhb.search.evolution import RegularizedEvolution
from nhb.space import nhb2


def _cfg_tuple(cfg: nhb2.Config) -> tuple:
    return (*np.asarray(cfg.cell).tolist(), int(cfg.lr), int(cfg.bs))


def test_fill_then_tournament_then_remove_oldest():
    s = RegularizedEvolution(population_size=4, sample_size=3)
    ask, tell = jax.jit(lambda k, st: s.ask(k, st, ())), jax.jit(
        lambda st, c, f: s.tell(st, c, f, ()))
    st = s.init(jax.random.key(0), ())
    members, fits = [], [50.0, 70.0, 60.0, 40.0]
    for i in range(4):  # filling: uniform samples, queried without checking the budget
        assert bool(s.unchecked(st, ()))
        k = jax.random.key(i)
        cfg, epoch, st = ask(k, st)
        assert int(epoch) == 12
        assert _cfg_tuple(cfg) == _cfg_tuple(rng.sample(rng.uniforms(k, 13)))
        st = tell(st, cfg, jnp.float32(fits[i]))
        members.append(_cfg_tuple(cfg))
    assert not bool(s.unchecked(st, ())) and int(st.head) == 0
    # a cycle: 3 picks with replacement, the best of them mutated in one element
    k = jax.random.key(10)
    u = rng.uniforms(k, 8 + 3 + 2)
    picks = np.asarray(rng.randint(u[8:11], 4))
    parent = picks[np.argmax(np.asarray(fits)[picks])]
    cfg, _, st = ask(k, st)
    child = _cfg_tuple(cfg)
    diff = np.flatnonzero(np.array(child) != np.array(members[parent]))
    assert len(diff) == 1
    st = tell(st, cfg, jnp.float32(99.0))
    assert int(st.head) == 1 and _cfg_tuple(jax.tree.map(lambda a: a[0], st.pop)) == child
    np.testing.assert_array_equal(st.fitness, [99.0, 70.0, 60.0, 40.0])
    cfg, _, st = ask(jax.random.key(11), st)
    st = tell(st, cfg, jnp.float32(jnp.nan))  # replaces slot 1 (the next oldest); NaN -> -inf
    assert int(st.head) == 2 and st.fitness[1] == -np.inf


def test_tournament_picks_first_of_equal_best():
    s = RegularizedEvolution(population_size=3, sample_size=3)
    st = s.init(jax.random.key(0), ())
    for i, f in enumerate([80.0, 80.0, 10.0]):
        st = s.tell(st, nhb2.make(np.full(6, i), i, i), jnp.float32(f), ())
    ask = jax.jit(lambda k, st: s.ask(k, st, ()))
    for seed in range(20):
        k = jax.random.key(seed)
        picks = np.asarray(rng.randint(rng.uniforms(k, 13)[8:11], 3))
        cfg, _, _ = ask(k, st)
        parent = picks[np.argmax(np.asarray([80.0, 80.0, 10.0])[picks])]
        assert sum(np.array(_cfg_tuple(cfg)) != np.array([parent] * 8)) == 1


def test_mutation_distribution():
    keys = jax.random.split(jax.random.key(1), 20000)
    parent = nhb2.make([0, 1, 2, 3, 0, 1], 3, 2)
    kids = jax.jit(jax.vmap(lambda k: rng.mutate(rng.uniforms(k, 2), parent)))(keys)
    cell, lr, bs = (np.asarray(x) for x in (kids.cell, kids.lr, kids.bs))
    changed = np.concatenate([cell != np.asarray(parent.cell), (lr != 3)[:, None],
                              (bs != 2)[:, None]], 1)
    assert (changed.sum(1) == 1).all()  # exactly one element, to a different value
    np.testing.assert_allclose(changed.mean(0), 1 / 8, atol=0.012)
    new_lr = lr[lr != 3]
    np.testing.assert_allclose(np.bincount(new_lr, minlength=8)[[0, 1, 2, 4, 5, 6, 7]]
                               / new_lr.size, 1 / 7, atol=0.03)
    arch = jax.jit(jax.vmap(lambda k: rng.mutate(rng.uniforms(k, 2), parent, arch_only=True)))(
        keys)
    assert (np.asarray(arch.lr) == 3).all() and (np.asarray(arch.bs) == 2).all()
    assert ((np.asarray(arch.cell) != np.asarray(parent.cell)).sum(1) == 1).all()
