"""Tests for the evosax-style NAS-HPO-Bench-II problem: decoding, fitness = the table's
values, out-of-space configs, and a whole ES loop inside `lax.scan`, vmapped over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import bench
from nhb.bench.evosax_problem import NUM_DIMS, WORST, NHB2Problem
from nhb.space import cells


@pytest.fixture(scope="module")
def problem():
    reps = cells.cell_tables().representative
    table = bench.random_table(2, rows=reps[:50], lr_indices=[1, 4, 7], bs_indices=[0, 5])
    return NHB2Problem(bench.Benchmark(table))


def test_decode_by_floor_over_the_tables_values(problem):
    x = jnp.array([[0.0, 0.26, 0.5, 0.75, 0.999, 1.7, 0.5, 0.6],
                   [-1.0, 0.1, 0.2, 0.3, 0.4, 0.49, 0.0, 0.49]])
    cfg = problem.decode(x)
    np.testing.assert_array_equal(np.asarray(cfg.cell), [[0, 1, 2, 3, 3, 3], [0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(cfg.lr), [4, 1])  # 3 lrs: 0.5 -> the 2nd (idx 4)
    np.testing.assert_array_equal(np.asarray(cfg.bs), [5, 0])  # 2 bss: 0.6 -> 512, 0.49 -> 16
    assert problem.num_dims == NUM_DIMS == 8


def test_fitness_is_the_tables_validation_error_and_off_table_is_worst(problem):
    key = jax.random.key(0)
    x = jax.random.uniform(key, (256, 8))
    fitness, state, m = jax.jit(problem.eval)(key, x, problem.init(key))
    want = jax.jit(lambda c: problem.bench.query(c))(problem.decode(x))  # NaN off-table
    ok = np.isfinite(np.asarray(want.valid_acc))
    assert ok.any() and (~ok).any()  # 50 of 1011 classes: most random cells are off-table
    np.testing.assert_allclose(np.asarray(fitness)[ok], 100 - np.asarray(want.valid_acc)[ok])
    np.testing.assert_array_equal(np.asarray(fitness)[~ok], WORST)
    np.testing.assert_array_equal(np.asarray(m["in_space"]), ok)
    assert int(state.counter) == 256
    assert float(state.cost) == pytest.approx(float(np.asarray(want.cost)[ok].sum()), rel=1e-5)


def test_an_es_loop_runs_in_scan_and_vmaps_over_seeds(problem):
    """A (1+8) evolution strategy: every generation keeps the best so far."""
    pop = 8

    def run(key):
        k0, key = jax.random.split(key)
        best_x = problem.sample(k0)
        best_f, state, _ = problem.eval(k0, best_x[None], problem.init(k0))

        def gen(carry, k):
            best_x, best_f, state = carry
            xs = best_x + 0.2 * jax.random.normal(k, (pop, 8))
            f, state, _ = problem.eval(k, xs, state)
            i = jnp.argmin(f)
            better = f[i] < best_f[0]
            return (jnp.where(better, xs[i], best_x), jnp.where(better, f[i], best_f[0])[None],
                    state), best_f[0]

        (_, f, state), trace = jax.lax.scan(gen, (best_x, best_f, state),
                                            jax.random.split(key, 30))
        return f[0], trace, state.counter

    final, trace, counter = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), 16))
    assert np.all(np.diff(np.asarray(trace), axis=1) <= 0)  # elitist: never worse
    assert np.all(np.asarray(counter) == 1 + 30 * pop)
    best_possible = 100 - problem.bench.best("valid", seed="official")[1]
    assert float(np.median(final)) < 100 and np.all(np.asarray(final) >= best_possible - 1e-4)
