"""Random search (Bergstra & Bengio 2012): uniform over 4096 cells x 8 lrs x 6 batch sizes.

As the reference `bench_algos/random_search.py`: every query is a full 12-epoch query of an
independent uniform config (repeats possible and charged again). On a sub-space (a sub-grid
table) the config is uniform over its covered cells x lrs x batch sizes (`sampling.sample`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.search.base import Strategy
from nhb.space import nhb2


@dataclasses.dataclass(frozen=True)
class RandomSearch(Strategy):
    """Uniform random search over the joint space (state: the number of queries told)."""

    space: SearchSpace | None = None
    name = "rs"

    def init(self, key: jax.Array, params: tuple) -> jax.Array:
        """State: int32 count of queries told."""
        del key, params
        return jnp.zeros((), jnp.int32)

    def ask(self, key: jax.Array, state: jax.Array,
            params: tuple) -> tuple[nhb2.Config, jax.Array, jax.Array]:
        """A uniform config at the full 12 epochs."""
        del params
        sp = self.sp
        cfg = sampling.sample(rng.uniforms(key, sampling.n_sample(sp)), sp)
        return cfg, jnp.int32(self.full_epoch), state

    def tell(self, state: jax.Array, cfg: nhb2.Config, fitness: jax.Array, params: tuple,
             cost: jax.Array | float = 0.0) -> jax.Array:
        """Counts the query."""
        del cfg, fitness, params, cost
        return state + 1
