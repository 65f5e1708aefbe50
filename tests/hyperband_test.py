"""Tests for successive halving / Hyperband: hpbandster's schedule, bracket sizes, promotion."""

import jax
import jax.numpy as jnp
import numpy as np

from nhb.search import hyperband
from nhb.space import nhb2


def fitness(cfg: nhb2.Config, epoch: int) -> float:
    """A deterministic fitness: distinct per config, rising with the epoch."""
    return float(int(nhb2.to_index(cfg)) * 7919 % 1000) / 20 + epoch


def drive(s: hyperband.Hyperband, n_queries: int, fit=fitness, seed: int = 0) -> list:
    """Asks/tells n_queries times; returns (epoch, flat index, fitness, stage, iteration)."""
    ask = jax.jit(lambda k, st: s.ask(k, st, ()))
    tell = jax.jit(lambda st, c, f: s.tell(st, c, f, ()))
    st = s.init(jax.random.key(seed), ())
    log = []
    for i in range(n_queries):
        stage, it = int(st.stage), int(st.iteration)
        cfg, epoch, st = ask(jax.random.key(1000 * seed + i), st)
        f = fit(cfg, int(epoch))
        st = tell(st, cfg, jnp.float32(f))
        log.append((int(epoch), int(nhb2.to_index(cfg)), f, stage, it))
    return log


def test_schedule_matches_hpbandster():
    sch = hyperband.schedule(3, 1, 12)
    np.testing.assert_allclose(sch["budgets"], [4 / 3, 4, 12])
    np.testing.assert_array_equal(sch["epochs"], [1, 4, 12])
    np.testing.assert_array_equal(sch["ns"], [[3, 0, 0], [3, 1, 0], [9, 3, 1]])
    sch = hyperband.schedule(2, 1, 8)
    np.testing.assert_array_equal(sch["ns"][-1], [8, 4, 2, 1])
    assert hyperband.Hyperband().iteration_queries(3) == 13 + 4 + 3


def test_hyperband_brackets_and_promotions():
    log = drive(hyperband.Hyperband(), 20 + 13)
    epochs = [e for e, *_ in log]
    assert epochs == [1] * 9 + [4] * 3 + [12] + [4] * 3 + [12] + [12] * 3 + [1] * 9 + [4] * 3 + [12]
    first = log[:9]
    best3 = sorted(range(9), key=lambda i: -first[i][2])[:3]
    promoted = [first[i][1] for i in sorted(best3)]  # creation order kept
    assert [x[1] for x in log[9:12]] == promoted
    stage1 = log[9:12]
    assert log[12][1] == max(stage1, key=lambda x: x[2])[1]
    b1 = log[13:16]  # bracket s=1: 3 new configs at 4 epochs, the best re-queried at 12
    assert log[16][1] == max(b1, key=lambda x: x[2])[1]
    assert len({x[1] for x in log[17:20]}) == 3  # bracket s=0: 3 new configs at 12 epochs
    assert [x[4] for x in log[:20]] == [0] * 13 + [1] * 4 + [2] * 3


def test_successive_halving_repeats_the_largest_bracket():
    log = drive(hyperband.SuccessiveHalving(), 26)
    assert [e for e, *_ in log] == ([1] * 9 + [4] * 3 + [12]) * 2


def test_failed_configs_are_not_promoted_and_slots_are_refilled():
    bad = set()

    def fit(cfg, epoch):
        i = int(nhb2.to_index(cfg))
        if epoch == 1 and len(bad) < 8:  # 8 of the 9 first configs fail
            bad.add(i)
            return float("nan")
        return fitness(cfg, epoch)

    log = drive(hyperband.Hyperband(), 13, fit)
    survivor = [x[1] for x in log[:9] if x[1] not in bad]
    assert len(survivor) == 1
    stage1 = log[9:12]
    assert stage1[0][1] == survivor[0] and stage1[0][0] == 4
    assert all(x[1] not in bad for x in stage1[1:])  # two new samples fill the slots
    assert log[12][0] == 12


def test_iteration_bound_ignores_the_clock():
    s = hyperband.Hyperband(n_iterations=2)
    st = s.init(jax.random.key(0), ())
    assert bool(s.unchecked(st, ())) and not bool(s.done(st, ()))
    assert bool(s.done(st.replace(iteration=jnp.int32(2)), ()))
    assert not bool(hyperband.Hyperband().unchecked(st, ()))
