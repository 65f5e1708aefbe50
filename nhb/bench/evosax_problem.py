"""NAS-HPO-Bench-II as an evosax-style `Problem`: evolution strategies on a table, jitted.

evosax (>= 0.2) problems expose `init(key) -> state`, `eval(key, solutions, state) ->
(fitness, state, metrics)` and `sample(key) -> solution`; strategies minimise the fitness of
a population of real vectors. `NHB2Problem` decodes a real vector of 8 coordinates (6 edges,
lr, batch size) by `floor(clip(x, 0, 1 - eps) * choices)` per coordinate (edges over the 4
ops, lr / batch size over the table's own values) and queries the table in one batched,
jittable gather (`nhb.bench.Benchmark.query`), so a whole ES run fits in `lax.scan` and many
runs in `vmap`, as with nhb's own strategies.

Fitness = 100 - validation accuracy (%) at `epoch` (official seed unless set), a config
outside the table (a cell whose class is not stored) gets the worst fitness, 100, and
`metrics["in_space"] = False`. The state counts evaluations and sums the simulated training
cost (seconds) the queries charge. The class does not import evosax: it follows its
interface, so it also works without it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.api import Benchmark
from nhb.space import cells as _cells
from nhb.space import nhb2

NUM_DIMS = _cells.NUM_EDGES + 2
WORST = 100.0


@struct.dataclass
class ProblemState:
    """Evaluations so far and the simulated seconds they charged."""

    counter: jax.Array
    cost: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class NHB2Problem:
    """The table as an evosax-style problem (see the module docstring).

    Attributes:
        bench: the benchmark (a pytree; any table / sub-grid).
        epoch: queried epoch (None: the table's last).
        seed: seed mode of the queries ("official", an int index, "mean").
    """

    bench: Benchmark
    epoch: int | None = None
    seed: str | int = "official"

    @property
    def num_dims(self) -> int:
        """8: six edges, the learning rate, the batch size."""
        return NUM_DIMS

    def decode(self, solutions: jax.Array) -> nhb2.Config:
        """Configs of real vectors [..., 8] (full-grid lr / batch-size indices)."""
        x = jnp.clip(jnp.asarray(solutions, jnp.float32), 0.0, 1.0 - 1e-6)
        cell = jnp.floor(x[..., :_cells.NUM_EDGES] * _cells.NUM_OPS).astype(jnp.int8)
        lrs = jnp.asarray(self.bench.space.lrs, jnp.int32)
        bss = jnp.asarray(self.bench.space.bss, jnp.int32)
        lr = lrs[jnp.floor(x[..., -2] * len(self.bench.space.lrs)).astype(jnp.int32)]
        bs = bss[jnp.floor(x[..., -1] * len(self.bench.space.bss)).astype(jnp.int32)]
        return nhb2.make(cell, lr, bs)

    def init(self, key: jax.Array) -> ProblemState:
        """A fresh state (no evaluations)."""
        del key
        return ProblemState(counter=jnp.int32(0), cost=jnp.float32(0.0))

    def sample(self, key: jax.Array) -> jax.Array:
        """A uniform solution [8] in [0, 1)."""
        return jax.random.uniform(key, (NUM_DIMS,))

    def eval(self, key: jax.Array, solutions: jax.Array, state: ProblemState
             ) -> tuple[jax.Array, ProblemState, dict[str, Any]]:
        """Fitness of a population [P, 8] (lower is better; see the module docstring).

        Args:
            key: PRNG key (used only by seed="random" queries).
            solutions: real vectors [P, 8].
            state: the problem state.

        Returns:
            (fitness [P], new state, metrics: valid_acc, test_acc, cost, in_space [P]).
        """
        cfgs = self.decode(solutions)
        kw = {"key": key} if self.seed == "random" else {}
        r = self.bench.query(cfgs, epoch=self.epoch, seed=self.seed, **kw)
        ok = jnp.isfinite(r.valid_acc)
        fitness = jnp.where(ok, 100.0 - r.valid_acc, WORST)
        cost = jnp.where(ok, r.cost, 0.0)
        state = state.replace(counter=state.counter + solutions.shape[0],
                              cost=state.cost + jnp.sum(cost))
        return fitness, state, dict(valid_acc=r.valid_acc, test_acc=r.test_acc, cost=cost,
                                    in_space=ok)
