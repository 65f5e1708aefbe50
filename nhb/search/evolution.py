"""Regularized (aging) evolution, Real et al. 2019, as the reference `bench_algos/rea.py`.

Population 10 filled with uniform random configs (these initial queries are made without
checking the budget, as the reference's `while len(population) < population_size` loop);
then each cycle samples `sample_size` members uniformly *with* replacement, takes the one of
highest validation accuracy (the first of equal ones, as Python's `max`), mutates one of the
8 elements (6 edges, lr, bs) to a different value (`nhb2.mutate`'s distribution, via
`rng.mutate`), queries the child at 12 epochs, appends it and removes the oldest member.
With `arch_only=True` only the 6 edges are mutated (the NAS phase of the sequential
baselines, `rea_nas.py`). On a sub-space the initial members are uniform over the space and
the mutation is the full mutation conditioned on staying in the space (`sampling.mutate`).

The population is a fixed-size ring buffer: slot `head` holds the oldest member. NaN fitness
(failed/absent entries) ranks below every number.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.search.base import Strategy, put
from nhb.space import cells as _cells
from nhb.space import nhb2


@struct.dataclass
class REState:
    """Regularized-evolution state.

    Attributes:
        pop: `nhb2.Config` [P] members (slot order, not age order).
        fitness: float32 [P] their validation accuracies (-inf for NaN / empty).
        n: int32 members added so far (`n < P` while filling).
        head: int32 slot of the oldest member once full.
    """

    pop: nhb2.Config
    fitness: jax.Array
    n: jax.Array
    head: jax.Array


def _take(cfg: nhb2.Config, i: jax.Array) -> nhb2.Config:
    return jax.tree.map(lambda a: a[i], cfg)


@dataclasses.dataclass(frozen=True)
class RegularizedEvolution(Strategy):
    """Aging evolution (population 10, sample size 3 with replacement by default).

    Attributes:
        population_size: P.
        sample_size: tournament size S (sampled with replacement).
        arch_only: mutate only the cell (lr/bs kept), as the sequential NAS phase.
        space: the space searched (None: full).
    """

    population_size: int = 10
    sample_size: int = 3
    arch_only: bool = False
    space: SearchSpace | None = None
    name = "re"

    def init(self, key: jax.Array, params: tuple) -> REState:
        """An empty population."""
        del key, params
        p = self.population_size
        pop = nhb2.make(jnp.zeros((p, _cells.NUM_EDGES)), jnp.zeros(p), jnp.zeros(p))
        return REState(pop=pop, fitness=jnp.full(p, -jnp.inf, jnp.float32),
                       n=jnp.zeros((), jnp.int32), head=jnp.zeros((), jnp.int32))

    def ask(self, key: jax.Array, state: REState,
            params: tuple) -> tuple[nhb2.Config, jax.Array, REState]:
        """A random config while filling, else a mutated tournament winner."""
        del params
        sp = self.sp
        n_s, n_m = sampling.n_sample(sp), sampling.n_mutate(sp, self.arch_only)
        u = rng.uniforms(key, n_s + self.sample_size + n_m)
        picks = rng.randint(u[n_s:n_s + self.sample_size], self.population_size)
        parent = _take(state.pop, picks[jnp.argmax(state.fitness[picks])])
        child = sampling.mutate(u[n_s + self.sample_size:], parent, sp, self.arch_only)
        filling = state.n < self.population_size
        cfg = jax.tree.map(lambda a, b: jnp.where(filling, a, b), sampling.sample(u[:n_s], sp),
                           child)
        return cfg, jnp.int32(self.full_epoch), state

    def tell(self, state: REState, cfg: nhb2.Config, fitness: jax.Array, params: tuple,
             cost: jax.Array | float = 0.0) -> REState:
        """Appends the child; once full it replaces the oldest member."""
        del params, cost
        filling = state.n < self.population_size
        slot = jnp.where(filling, state.n, state.head)
        fit = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness).astype(jnp.float32)
        pop = jax.tree.map(lambda a, b: put(a, slot, b), state.pop, cfg)
        head = jnp.where(filling, state.head, (state.head + 1) % self.population_size)
        return REState(pop=pop, fitness=put(state.fitness, slot, fit), n=state.n + 1,
                       head=head)

    def query_bound(self, bench: Any, budget: float, seed: str | int = "official") -> int:
        """The budget's full queries plus the unchecked initial population."""
        return super().query_bound(bench, budget, seed) + self.population_size

    def unchecked(self, state: REState, params: tuple) -> jax.Array:
        """The initial population is queried without checking the budget."""
        del params
        return state.n < self.population_size
