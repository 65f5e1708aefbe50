"""Uniform sampling and mutation within a table's search space (`nhb.bench.SearchSpace`).

On the full 4096 x 8 x 6 space (`space.is_full`, a static property) these are exactly
`rng.sample` / `rng.mutate` (same uniforms, bit-identical results). On a sub-space each is the
CONDITIONAL distribution of the full-space operator given that its result lies in the space:

- `sample`: uniform over covered cells x allowed lrs x allowed batch sizes (3 uniforms: the
  cell is uniform over the covered cells, i.e. the full space's uniform cell given coverage);
- `mutate`: the full mutation picks one of the 8 elements (6 edges, lr, bs; the 6 edges if
  `arch_only`) uniformly and changes it to a uniformly chosen different value, so neighbour y
  of x has probability 1/8 * 1/(cardinality - 1) (1/24 for an edge, 1/56 for the lr, 1/40 for
  the batch size). Here those probabilities are restricted to the neighbours inside the space
  and renormalised (integer weights 35 : 15 : 21, exact inverse-CDF draw with one uniform). If
  no neighbour is in the space (e.g. a single-class table that fixes lr and bs), the child is
  drawn uniformly from the space instead (for `arch_only`: a uniform covered cell, lr / bs
  kept), so the search keeps moving.

Randomness comes from the uniforms of one `rng.uniforms` call per ask: `n_sample(space)` and
`n_mutate(space)` say how many each operator consumes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from nhb.bench.subspace import SearchSpace
from nhb.search import rng
from nhb.space import cells as _cells
from nhb.space import nhb2

FULL = SearchSpace.full()
WEIGHT_EDGE, WEIGHT_LR, WEIGHT_BS = 35, 15, 21  # 105 x (1/3, 1/7, 1/5)
_POW4 = np.array([4 ** (5 - k) for k in range(6)], np.int32)


def resolve(space: SearchSpace | None) -> SearchSpace:
    """`space`, or the full space for None."""
    return FULL if space is None else space


def n_sample(space: SearchSpace) -> int:
    """Uniforms used by `sample`."""
    return rng.N_SAMPLE if space.is_full else 3


def n_mutate(space: SearchSpace, arch_only: bool = False) -> int:
    """Uniforms used by `mutate` (the draw, plus the uniform fallback's on a sub-space)."""
    if space.is_full:
        return rng.N_MUTATE
    return 2 if arch_only else 1 + n_sample(space)


@functools.cache
def cell_digits(space: SearchSpace) -> np.ndarray:
    """int8 [n_cells, 6] op digits of the covered cells (in `space.cells` order)."""
    return _cells.cell_tables().digits[space.cells].astype(np.int8)


def pick(u: jax.Array, values: tuple[int, ...]) -> jax.Array:
    """A uniform choice among static `values` (int32) from one uniform."""
    return jnp.asarray(values, jnp.int32)[rng.randint(u, len(values))]


def sample_cell(u: jax.Array, space: SearchSpace) -> jax.Array:
    """A uniform covered cell (int8 [6] digits) from one uniform."""
    if space.all_cells:
        return nhb2.cell_from_index(rng.randint(u, nhb2.NUM_CELLS))
    return jnp.asarray(cell_digits(space))[rng.randint(u, space.n_cells)]


def sample(u: jax.Array, space: SearchSpace) -> nhb2.Config:
    """A uniform config of the space from `n_sample(space)` uniforms (`rng.sample` on the
    full space, else `sample_within`)."""
    if space.is_full:
        return rng.sample(u)
    return sample_within(u, space)


def sample_within(u: jax.Array, space: SearchSpace) -> nhb2.Config:
    """The general (sub-space) path of `sample`, for any space: 3 uniforms."""
    return nhb2.make(sample_cell(u[0], space), pick(u[1], space.lrs), pick(u[2], space.bss))


def neighbours(cfg: nhb2.Config, space: SearchSpace,
               arch_only: bool = False) -> tuple[nhb2.Config, jax.Array]:
    """Every one-element change of `cfg` and its mutation weight within the space (jittable).

    Args:
        cfg: one config.
        space: the space.
        arch_only: only edge changes (lr, bs kept).

    Returns:
        (candidates [N] with N = 18 (+7 lr, +5 bs unless `arch_only`), int32 weights [N]):
        `WEIGHT_EDGE` / `WEIGHT_LR` / `WEIGHT_BS` (1 each if `arch_only`) where the candidate
        lies in the space, else 0. Weights / their sum are the conditional probabilities.
    """
    mask = jnp.asarray(space.mask)
    lr_ok = jnp.asarray(space.lr_slot)[cfg.lr] >= 0
    bs_ok = jnp.asarray(space.bs_slot)[cfg.bs] >= 0
    cell = cfg.cell.astype(jnp.int32)
    idx = nhb2.cell_index(cell)
    new = (cell[:, None] + jnp.arange(1, 4)) % _cells.NUM_OPS  # [6 edges, 3 shifts]
    cand = (idx + (new - cell[:, None]) * jnp.asarray(_POW4)[:, None]).reshape(-1)
    w_cell = (mask[cand] & lr_ok & bs_ok).astype(jnp.int32)
    n = cand.shape[0]
    cells = [nhb2.cell_from_index(cand)]
    lrs, bss = [jnp.full(n, cfg.lr, jnp.int32)], [jnp.full(n, cfg.bs, jnp.int32)]
    if arch_only:
        weights = w_cell
    else:
        lr_c = (cfg.lr + jnp.arange(1, nhb2.NUM_LRS)) % nhb2.NUM_LRS
        bs_c = (cfg.bs + jnp.arange(1, nhb2.NUM_BS)) % nhb2.NUM_BS
        here = mask[idx]
        w_lr = (here & bs_ok & (jnp.asarray(space.lr_slot)[lr_c] >= 0)).astype(jnp.int32)
        w_bs = (here & lr_ok & (jnp.asarray(space.bs_slot)[bs_c] >= 0)).astype(jnp.int32)
        cells += [jnp.broadcast_to(cfg.cell, (nhb2.NUM_LRS - 1 + nhb2.NUM_BS - 1, 6))]
        lrs += [lr_c, jnp.full(nhb2.NUM_BS - 1, cfg.lr, jnp.int32)]
        bss += [jnp.full(nhb2.NUM_LRS - 1, cfg.bs, jnp.int32), bs_c]
        weights = jnp.concatenate([WEIGHT_EDGE * w_cell, WEIGHT_LR * w_lr, WEIGHT_BS * w_bs])
    cands = nhb2.make(jnp.concatenate(cells), jnp.concatenate(lrs), jnp.concatenate(bss))
    return cands, weights


def draw_weighted(u: jax.Array, weights: jax.Array) -> jax.Array:
    """Index k with probability weights[k] / sum (int weights, exact; one uniform). Returns
    the last index when all weights are 0."""
    cum = jnp.cumsum(weights)
    total = cum[-1]
    r = jnp.minimum(jnp.floor(u * total.astype(jnp.float32)).astype(jnp.int32), total - 1)
    return jnp.minimum(jnp.sum(cum <= r), weights.shape[0] - 1).astype(jnp.int32)


def mutate(u: jax.Array, cfg: nhb2.Config, space: SearchSpace,
           arch_only: bool = False) -> nhb2.Config:
    """The conditional mutation (see the module docstring) from `n_mutate(space)` uniforms
    (`rng.mutate` on the full space, else `mutate_within`)."""
    if space.is_full:
        return rng.mutate(u, cfg, arch_only)
    return mutate_within(u, cfg, space, arch_only)


def mutate_within(u: jax.Array, cfg: nhb2.Config, space: SearchSpace,
                  arch_only: bool = False) -> nhb2.Config:
    """The general (sub-space) path of `mutate`, for any space: 4 uniforms (2 if
    `arch_only`): the neighbour draw, then the uniform fallback's."""
    cands, weights = neighbours(cfg, space, arch_only)
    k = draw_weighted(u[0], weights)
    child = jax.tree.map(lambda a: a[k], cands)
    if arch_only:
        fallback = nhb2.make(sample_cell(u[1], space), cfg.lr, cfg.bs)
    else:
        fallback = sample_within(u[1:], space)
    stuck = jnp.sum(weights) == 0
    return jax.tree.map(lambda a, b: jnp.where(stuck, b, a), child, fallback)
