"""The strategy protocol, the runner's record and scores (the paper's benchmarking protocol).

A strategy is a static Python object with pure, jittable methods over pytrees (evosax style):

- `init(key, params) -> state`
- `ask(key, state, params) -> (cfg, epoch, state)`: one `nhb2.Config` (scalar batch shape) and
  the int32 epoch (1..12) to query it at;
- `tell(state, cfg, fitness, params, cost) -> state`: `fitness` is the queried validation
  accuracy (%) (NaN for a failed/absent entry) and `cost` the simulated seconds charged;
- `done(state, params) -> bool`: the strategy has finished (e.g. BOHB's fixed iterations);
- `unchecked(state, params) -> bool`: the next query is made whatever the clock says (the
  reference RE fills its initial population without checking the budget);
- `ready(state, params) -> bool`: another query may be asked while earlier ones still run
  (several workers; default True). With asynchronous workers `tell`s come in the order the
  queries finish, not the order they were asked: a strategy must tell by `cfg`, not by
  "the config last asked".

Shape-determining settings (population size, buffer sizes) are constructor arguments; numeric
settings live in a `params` pytree (`default_params()`).

Search space: every strategy has a static `space` field (an `nhb.bench.SearchSpace`; None =
the full 4096 x 8 x 6 space). The runner binds a strategy whose `space` is None to the benchmark's
table space (`bench.space`), so on a sub-grid table the strategies sample and mutate only
configs the table holds (`nhb.search.sampling`); on the full space they run exactly the
full-space code. A strategy bound explicitly (`strategy.on(space)`) keeps its space. A "full"
query stops at the space's `n_epochs` (12 for the benchmark; the last epoch of a table of
another length), and Hyperband's default maximum budget follows it.

The simulated-time runner (`run`, `run_many`) is `nhb.search.runner`; this module also
holds its record (`Trajectory`), the select helpers (`put`, `pick`), the compensated clock
and the scores (`score`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.api import Benchmark
from nhb.bench.subspace import SearchSpace
from nhb.search import sampling
from nhb.space import nhb2

FULL_EPOCH = 12


class Strategy:
    """Base class of search strategies (see the module docstring for the protocol)."""

    name = "strategy"
    space: SearchSpace | None = None  # dataclass subclasses declare it as their last field
    # steps of a few hundred operations: the runner's program is compiled for compile speed
    # on the CPU (`compiler_options`); False for steps that need optimised code (BOHB's KDE)
    cheap_steps = True

    @property
    def sp(self) -> SearchSpace:
        """The space searched (`space`, or the full space when None)."""
        return sampling.resolve(self.space)

    def on(self, space: SearchSpace | None) -> Strategy:
        """This strategy searching `space` (None: the full space)."""
        return dataclasses.replace(self, space=space)

    def default_params(self) -> Any:
        """The reference settings as a params pytree."""
        return ()

    def init(self, key: jax.Array, params: Any) -> Any:
        """Initial state."""
        raise NotImplementedError

    def ask(self, key: jax.Array, state: Any, params: Any) -> tuple[nhb2.Config, jax.Array, Any]:
        """Proposes the next config and the epoch to query it at."""
        raise NotImplementedError

    def tell(self, state: Any, cfg: nhb2.Config, fitness: jax.Array, params: Any,
             cost: jax.Array | float = 0.0) -> Any:
        """Reports the validation accuracy (%) and cost of the config last asked."""
        raise NotImplementedError

    def done(self, state: Any, params: Any) -> jax.Array:
        """Whether the strategy has stopped by itself (default: never)."""
        del state, params
        return jnp.bool_(False)

    def unchecked(self, state: Any, params: Any) -> jax.Array:
        """Whether the next query ignores the budget (default: never)."""
        del state, params
        return jnp.bool_(False)

    def ready(self, state: Any, params: Any) -> jax.Array:
        """Whether another query may be asked while earlier ones are still running (with
        several workers; default: always). A strategy whose next proposal needs results it
        has asked for (a Hyperband stage's promotions) says False until they are told."""
        del state, params
        return jnp.bool_(True)

    def overflowed(self, state: Any) -> jax.Array:
        """Whether a fixed-size buffer of the strategy overflowed (default: never)."""
        del state
        return jnp.bool_(False)

    @property
    def full_epoch(self) -> int:
        """The epoch of a full query: the space's `n_epochs` (12 for the benchmark)."""
        return self.sp.n_epochs

    def query_bound(self, bench: Benchmark, budget: float, seed: str | int = "official") -> int:
        """An upper bound on one run's queries (to size `max_queries`): full queries at the
        table's cheapest cost until the budget, plus the crossing one."""
        return math.ceil(budget / bench.min_cost(bench.n_epochs, seed)) + 1


@struct.dataclass
class Trajectory:
    """One run's per-query record (leading axis `max_queries`; batched by `run_many`).

    Entries at and after `n_queries` are padding (index -1, NaN values, time = final time).

    Attributes:
        time: float32 [Q] simulated seconds after each query.
        cost: float32 [Q] seconds charged by each query.
        epoch: int32 [Q] epoch queried (1..12).
        index: int32 [Q] flat config index (`nhb2.to_index`) queried.
        valid_acc: float32 [Q] validation accuracy returned.
        best_index: int32 [Q] incumbent (flat index) after each query.
        best_valid: float32 [Q] incumbent's validation accuracy.
        best_test: float32 [Q] incumbent's 12-epoch test accuracy (the query seed; "mean"
            for seed "random"), as the reference's `get_results` scores it.
        best_200: float32 [Q] incumbent's 200-epoch value (NaN if unavailable).
        n_queries: int32 number of queries made.
        truncated: bool, the run hit `max_queries` before its budget or end, or a buffer of
            the strategy overflowed (e.g. BOHB's `max_obs`): its result is not the protocol's.
    """

    time: jax.Array
    cost: jax.Array
    epoch: jax.Array
    index: jax.Array
    valid_acc: jax.Array
    best_index: jax.Array
    best_valid: jax.Array
    best_test: jax.Array
    best_200: jax.Array
    n_queries: jax.Array
    truncated: jax.Array


def put(a: jax.Array, i: jax.Array, v: jax.Array, where: jax.Array | bool = True) -> jax.Array:
    """`a.at[i].set(v)` along the leading axis (scalar `i`; only if `where`) as a select.

    Under `vmap` (an index per run) `.at[i].set` is a scatter, which XLA:CPU expands into a
    loop over the runs: slow to compile and to run. This is one elementwise select (same
    values; an out-of-range `i` writes nothing, as the scatter). XLA may fuse the computation
    of `v` into the select and redo it for every element of `a`, so `v` should be cheap or a
    loop value (the runner carries each proposal into the next step for this reason).
    """
    hit = (jnp.arange(a.shape[0]) == i) & where
    return jnp.where(hit.reshape(hit.shape + (1,) * (a.ndim - 1)), jnp.asarray(v, a.dtype), a)


def pick(a: jax.Array, i: jax.Array) -> jax.Array:
    """`a[..., i]` for integer i [...] (one index per row of the last axis) as a masked sum.

    Same value as the gather, and its gradient is a select instead of a scatter-add (which
    XLA:CPU runs as a loop; see `put`).
    """
    hit = jnp.arange(a.shape[-1]) == jnp.asarray(i)[..., None]
    return jnp.sum(jnp.where(hit, a, jnp.zeros((), a.dtype)), -1)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def clock_add(hi: jax.Array, lo: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Compensated (double-float32) accumulation, so long runs keep ~float64 precision."""
    s, e = _two_sum(hi, x)
    return _two_sum(s, e + lo)


def clock_before(hi: jax.Array, lo: jax.Array, budget: jax.Array) -> jax.Array:
    """hi + lo < budget, exactly for a normalised (hi, lo) pair."""
    return (hi < budget) | ((hi == budget) & (lo < 0))


@struct.dataclass
class Scores:
    """The selected configs' scores (paper Table 3) and the regret (Figure 6).

    Attributes:
        final_index: int32 [...] selected config (flat index; -1 if no query).
        final_test: float32 [...] its 12-epoch test accuracy.
        final_200: float32 [...] its 200-epoch value (NaN if unavailable).
        regret: float32 [..., Q] oracle validation accuracy minus the incumbent's.
    """

    final_index: jax.Array
    final_test: jax.Array
    final_200: jax.Array
    regret: jax.Array


@jax.jit
def score(traj: Trajectory, oracle_valid: float | jax.Array) -> Scores:
    """The final incumbent's scores and the regret `oracle_valid - best_valid` per query.

    Args:
        traj: trajectories (any leading batch axes).
        oracle_valid: the best validation accuracy of the space under the query seed
            (`bench.best("valid", seed)[1]`), the paper's f(s*).

    Returns:
        `Scores`.
    """
    last = jnp.maximum(traj.n_queries - 1, 0)[..., None]
    pick = lambda a: jnp.take_along_axis(a, last, -1)[..., 0]
    none = traj.n_queries == 0
    regret = jnp.where(traj.best_index >= 0, oracle_valid - traj.best_valid, jnp.nan)
    return Scores(final_index=jnp.where(none, -1, pick(traj.best_index)),
                  final_test=jnp.where(none, jnp.nan, pick(traj.best_test)),
                  final_200=jnp.where(none, jnp.nan, pick(traj.best_200)), regret=regret)
