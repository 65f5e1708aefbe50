"""The strategy protocol and the simulated-time runner (the paper's benchmarking protocol).

A strategy is a static Python object with pure, jittable methods over pytrees (evosax style):

- `init(key, params) -> state`
- `ask(key, state, params) -> (cfg, epoch, state)`: one `nhb2.Config` (scalar batch shape) and
  the int32 epoch (1..12) to query it at;
- `tell(state, cfg, fitness, params, cost) -> state`: `fitness` is the queried validation
  accuracy (%) (NaN for a failed/absent entry) and `cost` the simulated seconds charged;
- `done(state, params) -> bool`: the strategy has finished (e.g. BOHB's fixed iterations);
- `unchecked(state, params) -> bool`: the next query is made whatever the clock says (the
  reference RE fills its initial population without checking the budget).

Shape-determining settings (population size, buffer sizes) are constructor arguments; numeric
settings live in a `params` pytree (`default_params()`).

Search space: every strategy has a static `space` field (an `nhb.bench.SearchSpace`; None =
the full 4096 x 8 x 6 space). `run` binds a strategy whose `space` is None to the benchmark's
table space (`bench.space`), so on a sub-grid table the strategies sample and mutate only
configs the table holds (`nhb.search.sampling`); on the full space they run exactly the
full-space code. A strategy bound explicitly (`strategy.on(space)`) keeps its space. A "full"
query stops at the space's `n_epochs` (12 for the benchmark; the last epoch of a table of
another length), and Hyperband's default maximum budget follows it.

`run` simulates one search as the reference scripts do: `while clock < budget: query` (the
budget is checked before each query, so the crossing query still counts), every query charged
as the official client charges it, and the incumbent is the config of the strictly best
validation accuracy so far (the client's log: the first query always becomes the incumbent,
later ones only if strictly greater — so NaN never wins, and a NaN first query stays). A query
whose cost is not finite (a cell absent from the table) is charged 0 s. One run
is a `lax.while_loop` (or `lax.scan` over `max_queries` steps, same results); `run_many` is
`jax.vmap` of it over runs whose keys are `rng.step_key(key, run_index)` (run index = seed).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.api import Benchmark
from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.space import nhb2

FULL_EPOCH = 12


class Strategy:
    """Base class of search strategies (see the module docstring for the protocol)."""

    name = "strategy"
    space: SearchSpace | None = None  # dataclass subclasses declare it as their last field

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



@struct.dataclass
class _Carry:
    key: jax.Array
    state: Any
    t_hi: jax.Array
    t_lo: jax.Array
    n: jax.Array
    best_index: jax.Array
    best_valid: jax.Array
    traj: Trajectory


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


def run(key: jax.Array, strategy: Strategy, params: Any, bench: Benchmark,
        budget: float | jax.Array, max_queries: int, seed: str | int = "official",
        loop: str = "while") -> Trajectory:
    """Simulates one search (jittable with `strategy`, `max_queries`, `seed`, `loop` static).

    Args:
        key: PRNG key of the run.
        strategy: the strategy.
        params: its params pytree.
        bench: the benchmark (a pytree argument).
        budget: simulated seconds; a query is made while the clock is below it (or the
            strategy says `unchecked`), until the strategy is `done` or `max_queries`.
            (A strategy without a `space` searches `bench.space`.)
        max_queries: trajectory length (static).
        seed: seed mode of the queries (see `Benchmark.query`; "official" as the paper).
        loop: "while" (`lax.while_loop`, stops early) or "scan" (`lax.scan` over all
            `max_queries` steps, inactive ones masked); identical results.

    Returns:
        The run's `Trajectory`.
    """
    if loop not in ("while", "scan"):
        raise ValueError(f"loop {loop!r} is invalid; valid choices: ['while', 'scan']")
    if strategy.space is None and dataclasses.is_dataclass(strategy):
        strategy = strategy.on(bench.space)
    if strategy.sp.n_epochs != bench.n_epochs:
        raise ValueError(f"the strategy's space has {strategy.sp.n_epochs} epochs but the "
                         f"table has {bench.n_epochs}; bind it with strategy.on(bench.space)")
    k_init = rng.step_key(key, 0xFFFFFFFF)
    budget = jnp.asarray(budget, jnp.float32)
    q = max_queries
    f32, i32 = jnp.float32, jnp.int32
    traj = Trajectory(time=jnp.zeros(q, f32), cost=jnp.zeros(q, f32), epoch=jnp.zeros(q, i32),
                      index=jnp.full(q, -1, i32), valid_acc=jnp.full(q, jnp.nan, f32),
                      best_index=jnp.full(q, -1, i32), best_valid=jnp.full(q, jnp.nan, f32),
                      best_test=jnp.full(q, jnp.nan, f32), best_200=jnp.full(q, jnp.nan, f32),
                      n_queries=jnp.zeros((), i32), truncated=jnp.bool_(False))
    carry = _Carry(key=key, state=strategy.init(k_init, params), t_hi=jnp.zeros((), f32),
                   t_lo=jnp.zeros((), f32), n=jnp.zeros((), i32),
                   best_index=jnp.full((), -1, i32), best_valid=jnp.full((), jnp.nan, f32),
                   traj=traj)

    def wants(c: _Carry) -> jax.Array:
        clock_ok = clock_before(c.t_hi, c.t_lo, budget) | strategy.unchecked(c.state, params)
        return clock_ok & ~strategy.done(c.state, params)

    def active(c: _Carry) -> jax.Array:
        return wants(c) & (c.n < q)

    def step(c: _Carry) -> _Carry:
        k_ask = rng.step_key(c.key, c.n)
        k_seed = rng.step_key(k_ask, 1) if seed == "random" else None
        cfg, epoch, state = strategy.ask(k_ask, c.state, params)
        res = bench.query(cfg, epoch, seed=seed, mode="valid", key=k_seed)
        acc, cost = res.valid_acc, res.cost
        state = strategy.tell(state, cfg, acc, params, cost)
        t_hi, t_lo = clock_add(c.t_hi, c.t_lo, jnp.where(jnp.isfinite(cost), cost, 0.0))
        index = nhb2.to_index(cfg).astype(i32)
        better = (c.n == 0) | (acc > c.best_valid)
        best_index = jnp.where(better, index, c.best_index)
        best_valid = jnp.where(better, acc, c.best_valid)
        n = c.n
        tr = c.traj
        tr = tr.replace(time=tr.time.at[n].set(t_hi + t_lo), cost=tr.cost.at[n].set(cost),
                        epoch=tr.epoch.at[n].set(jnp.asarray(epoch, i32)),
                        index=tr.index.at[n].set(index), valid_acc=tr.valid_acc.at[n].set(acc),
                        best_index=tr.best_index.at[n].set(best_index),
                        best_valid=tr.best_valid.at[n].set(best_valid), n_queries=n + 1)
        return _Carry(key=c.key, state=state, t_hi=t_hi, t_lo=t_lo, n=n + 1,
                      best_index=best_index, best_valid=best_valid, traj=tr)

    if loop == "while":
        carry = jax.lax.while_loop(active, step, carry)
    else:
        def scan_body(c: _Carry, _: None) -> tuple[_Carry, None]:
            go = active(c)
            new = step(c)
            return jax.tree.map(lambda a, b: jnp.where(go, a, b), new, c), None

        carry, _ = jax.lax.scan(scan_body, carry, None, length=q)
    tr = carry.traj
    pad = jnp.arange(q) >= carry.n
    final_time = carry.t_hi + carry.t_lo
    best_test, best_200 = incumbent_scores(tr.best_index, bench, seed)
    return tr.replace(time=jnp.where(pad, final_time, tr.time), best_test=best_test,
                      best_200=best_200, truncated=((carry.n >= q) & wants(carry))
                      | strategy.overflowed(carry.state))


def incumbent_scores(index: jax.Array, bench: Benchmark,
                     seed: str | int = "official") -> tuple[jax.Array, jax.Array]:
    """Full-query test accuracy (the table's last epoch: 12 for the benchmark; 'test' mode,
    seed `seed`; "mean" for "random") and 200-epoch value of flat config indices (NaN where
    the index is -1)."""
    seed = "mean" if seed == "random" else seed
    ok = index >= 0
    cfg = nhb2.from_index(jnp.maximum(index, 0))
    test = bench.query(cfg, bench.n_epochs, seed=seed, mode="test").test_acc
    a200 = bench.query(cfg, 200).test_acc
    return jnp.where(ok, test, jnp.nan), jnp.where(ok, a200, jnp.nan)


@functools.partial(jax.jit, static_argnames=("strategy", "n_runs", "max_queries", "seed",
                                             "loop"))
def run_many(key: jax.Array, strategy: Strategy, params: Any, bench: Benchmark,
             budget: float | jax.Array, n_runs: int, max_queries: int,
             seed: str | int = "official", loop: str = "while") -> Trajectory:
    """`n_runs` independent searches as one vmapped program; run i uses `step_key(key, i)`.

    Args:
        key: base PRNG key.
        strategy: the strategy (static; must be hashable, as strategy objects are).
        params: its params pytree.
        bench: the benchmark.
        budget: simulated seconds per run.
        n_runs: number of runs (static).
        max_queries: trajectory length (static).
        seed: query seed mode (static).
        loop: "while" or "scan" (static).

    Returns:
        `Trajectory` with a leading runs axis.
    """
    keys = jax.vmap(lambda i: rng.step_key(key, i))(jnp.arange(n_runs))  # run i's key
    one = lambda k: run(k, strategy, params, bench, budget, max_queries, seed, loop)
    return jax.vmap(one)(keys)


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
