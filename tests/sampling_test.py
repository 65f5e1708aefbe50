"""Tests for nhb.search.sampling: uniform sampling and mutation conditioned on a sub-space.

The operators take uniforms, so their laws are checked exactly by feeding a dense grid of
uniforms (each outcome's share of the grid is its probability to within 2 / grid size) and
comparing with a brute-force NumPy enumeration of the full-space operator restricted to the
space and renormalised.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import search
from nhb.bench.subspace import SearchSpace
from nhb.search import sampling
from nhb.space import nhb2

GRID = 50_000
POW4 = 4 ** np.arange(5, -1, -1)


def _idx(digits) -> int:
    return int(np.dot(digits, POW4))


def _key(cfg: nhb2.Config) -> tuple:
    return (*np.asarray(cfg.cell).tolist(), int(cfg.lr), int(cfg.bs))


def np_mutation_law(parent: tuple, space: SearchSpace, arch_only: bool = False) -> dict:
    """The full mutation (one of 8 elements, uniformly, to a uniformly chosen other value)
    restricted to the space's configs and renormalised, by enumeration."""
    n_pos = 6 if arch_only else 8
    law = collections.Counter()
    for p in range(n_pos):
        card = 4 if p < 6 else 8 if p == 6 else 6
        for v in range(card):
            if v == parent[p]:
                continue
            new = list(parent)
            new[p] = v
            if space.mask[_idx(new[:6])] and new[6] in space.lrs and new[7] in space.bss:
                law[tuple(new)] += 1.0 / n_pos / (card - 1)
    total = sum(law.values())
    return {k: v / total for k, v in law.items()}


def grid_law(fn, n_rest: int, rest: float = 0.37) -> dict:
    """Shares of the outcomes of fn(u) over a grid of the first uniform (others fixed)."""
    u0 = (jnp.arange(GRID, dtype=jnp.float32) + 0.5) / GRID
    us = jnp.concatenate([u0[:, None], jnp.full((GRID, n_rest), rest, jnp.float32)], 1)
    out = jax.jit(jax.vmap(fn))(us)
    keys = np.concatenate([np.asarray(out.cell), np.asarray(out.lr)[:, None],
                           np.asarray(out.bs)[:, None]], 1)
    counts = collections.Counter(map(tuple, keys.tolist()))
    return {k: v / GRID for k, v in counts.items()}


def assert_same_law(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, p in want.items():
        assert abs(got[k] - p) <= 2.0 / GRID, (k, got[k], p)


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    """A parent cell, three of its one-edge neighbours and two far cells; 3 lrs, 2 bss."""
    parent = [0, 1, 2, 3, 0, 1]
    near = [[1, 1, 2, 3, 0, 1], [2, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 1]]
    far = [[3, 3, 3, 3, 3, 3], [2, 0, 1, 1, 2, 2]]
    return SearchSpace.make([_idx(c) for c in [parent, *near, *far]], lrs=(1, 3, 6), bss=(0, 4))


def test_uniform_sample_is_uniform_over_the_space(space):
    law = grid_law(lambda u: sampling.sample_within(u, space), 2)
    cells = collections.Counter()
    for k, p in law.items():
        cells[_idx(k[:6])] += p
    np.testing.assert_allclose(sorted(cells), space.cells)
    np.testing.assert_allclose(list(cells.values()), 1 / space.n_cells, atol=2 / GRID)
    # lr and bs from their own uniforms: exact grid over u[1] and u[2]
    u = (jnp.arange(GRID, dtype=jnp.float32) + 0.5) / GRID
    lr = jax.jit(jax.vmap(lambda x: sampling.pick(x, space.lrs)))(u)
    np.testing.assert_allclose(np.bincount(np.asarray(lr), minlength=8)[[1, 3, 6]] / GRID,
                               1 / 3, atol=2 / GRID)
    assert np.isin(np.asarray(lr), space.lrs).all()


@pytest.mark.parametrize("arch_only", [False, True])
def test_mutation_is_the_conditional_full_mutation(space, arch_only):
    parent = nhb2.make([0, 1, 2, 3, 0, 1], 3, 4)
    want = np_mutation_law(_key(parent), space, arch_only)
    # 3 edge neighbours (35 each), lrs 1 and 6 (15 each), bs 0 (21): 156 in all
    if not arch_only:
        assert want[(1, 1, 2, 3, 0, 1, 3, 4)] == pytest.approx(35 / 156)
        assert want[(0, 1, 2, 3, 0, 1, 6, 4)] == pytest.approx(15 / 156)
        assert want[(0, 1, 2, 3, 0, 1, 3, 0)] == pytest.approx(21 / 156)
    else:
        assert sorted(want.values()) == pytest.approx([1 / 3] * 3)
    n = sampling.n_mutate(space, arch_only)
    got = grid_law(lambda u: sampling.mutate(u, parent, space, arch_only), n - 1)
    assert_same_law(got, want)


def test_no_neighbour_in_the_space_falls_back_to_uniform():
    far = SearchSpace.make([_idx([3] * 6), _idx([2, 0, 1, 1, 2, 2])], lrs=(0,), bss=(5,))
    parent = nhb2.make([3] * 6, 0, 5)
    assert np_mutation_law(_key(parent), far) == {}
    _, w = jax.jit(lambda c: sampling.neighbours(c, far))(parent)
    assert int(w.sum()) == 0
    u1 = (jnp.arange(GRID, dtype=jnp.float32) + 0.5) / GRID
    us = jnp.stack([jnp.full(GRID, 0.3), u1, jnp.full(GRID, 0.5), jnp.full(GRID, 0.5)], 1)
    kids = jax.jit(jax.vmap(lambda u: sampling.mutate(u, parent, far)))(us)
    idx = np.asarray(nhb2.cell_index(kids.cell))
    np.testing.assert_allclose(np.bincount(np.searchsorted(far.cells, idx)) / GRID, 0.5,
                               atol=2 / GRID)
    assert (np.asarray(kids.lr) == 0).all() and (np.asarray(kids.bs) == 5).all()


def test_full_mask_through_the_general_path_is_the_full_mutation():
    full = SearchSpace.full()
    parent = nhb2.make([0, 1, 2, 3, 0, 1], 3, 2)
    _, w = jax.jit(lambda c: sampling.neighbours(c, full))(parent)
    assert w.tolist() == [35] * 18 + [15] * 7 + [21] * 5  # 1/24, 1/56, 1/40 of 840
    want = np_mutation_law(_key(parent), full)
    assert len(want) == 30 and want[(0, 1, 2, 3, 0, 1, 0, 2)] == pytest.approx(1 / 56)
    got = grid_law(lambda u: sampling.mutate_within(u, parent, full), 3)
    assert_same_law(got, want)
    # and the full-space operator itself (2 uniforms, a grid over the element choice) agrees
    # on the element marginals: 1/8 each
    u0 = (jnp.arange(GRID, dtype=jnp.float32) + 0.5) / GRID
    kids = jax.jit(jax.vmap(lambda a: sampling.mutate(jnp.stack([a, jnp.float32(0.5)]),
                                                       parent, full)))(u0)
    changed = np.concatenate([np.asarray(kids.cell) != np.asarray(parent.cell),
                              (np.asarray(kids.lr) != 3)[:, None],
                              (np.asarray(kids.bs) != 2)[:, None]], 1)
    np.testing.assert_allclose(changed.mean(0), 1 / 8, atol=2 / GRID)


def test_full_space_operators_are_the_reference_ones():
    full = SearchSpace.full()
    assert sampling.n_sample(full) == 8 and sampling.n_mutate(full) == 2
    u = jax.random.uniform(jax.random.key(0), (8,))
    assert _key(sampling.sample(u, full)) == _key(search.rng.sample(u))
    cfg = nhb2.make([0, 1, 2, 3, 0, 1], 3, 2)
    assert _key(sampling.mutate(u[:2], cfg, full)) == _key(search.rng.mutate(u[:2], cfg))


def test_random_search_ask_is_uniform_over_the_space(space):
    """Chi-square of 20,000 asks (the strategy's own keys) against uniform over 36 configs."""
    from scipy import stats

    s = search.RandomSearch(space=space)
    keys = jax.random.split(jax.random.key(5), 20_000)
    cfg = jax.jit(jax.vmap(lambda k: s.ask(k, s.init(k, ()), ())[0]))(keys)
    assert bool(jnp.all(space.contains(cfg)))
    index = np.asarray(nhb2.to_index(cfg))
    values, counts = np.unique(index, return_counts=True)
    assert len(values) == space.n_configs == 36
    assert stats.chisquare(counts).pvalue > 1e-3
