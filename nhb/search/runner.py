"""The simulated-time runner: searches on a table in simulated time, one or many workers.

`run` simulates one search as the reference scripts do: `while clock < budget: query` (the
budget is checked before each query, so the crossing query still counts), every query charged
as the official client charges it, and the incumbent is the config of the strictly best
validation accuracy so far (the client's log: the first query always becomes the incumbent,
later ones only if strictly greater — so NaN never wins, and a NaN first query stays). A query
whose cost is not finite (a cell absent from the table) is charged 0 s.

Asynchronous workers (`n_workers` = N): each query occupies a worker from its dispatch until
its finish time (dispatch time + cost, on the simulated clock); whenever a worker is free the
strategy is asked (if the clock is below the budget, or `unchecked`, and the strategy is not
`done` and is `ready`), and queries are told and recorded in the order they finish (ties: the
first dispatched first), the clock then jumping to that finish. So the trajectory's `time`
is the simulated wall clock and the incumbent the best query finished by then; queries
started before the budget run to their end, like the sequential crossing query. N = 1 is the
sequential protocol above exactly (`tests/runner_test.py` holds it to a Python event loop and
`tests/search_test.py` to the golden hashes). This is the synchronous kind of Hyperband /
BOHB (Syne Tune's `SynchronousHyperbandScheduler`): a stage's promotions wait for all of its
results; hpbandster instead opens the next bracket for idle workers meanwhile. `run_many`
runs many searches, with keys `rng.step_key(key, run_index)` (run index = seed), in lockstep as one
program: a `lax.while_loop` over completed queries (or `lax.scan` over all `max_queries`,
same results) whose body is the vmapped step of every run, a finished run writing padding;
`run` is the same program for one run. The d-th query dispatched by a run is asked with
`rng.step_key(key, d)` (with `seed="random"`, its table seed drawn from `step_key` of that
key, 1).

Compile time (these programs are compiled once per method and run in well under a second on
the CPU, so compiling dominates): the loop carries the runs' states and writes each step's
records at the step index (no per-run scatter), the strategies update their buffers with
selects (`put`, `pick`) instead of per-run scatters (XLA:CPU turns a vmapped scatter into a
loop over the runs), and `run_many` compiles with `compiler_options` (XLA's faster-compiling
settings for cheap steps on the CPU); JAX's persistent compilation cache
(`nhb.search.study.use_compilation_cache`) removes most of the rest on a rerun.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.api import Benchmark
from nhb.search import rng
from nhb.search.base import Strategy, Trajectory, clock_add, clock_before, put
from nhb.space import nhb2


@struct.dataclass
class _Run:
    """One run's loop state (the loop carries it with a leading runs axis): the strategy's
    state after its last tell and asks, the clock (the last completion), the queries told
    (`n`) and dispatched (`d`), the incumbent, whether the run still wanted to query at its
    last dispatch (the budget or the strategy), and its workers [W]: busy, dispatched in the
    last step and not yet looked up (`fresh`), the finish time (double-float; the start time
    while fresh) and dispatch number of each running query, and the query itself with the
    table's answer, told when it finishes."""

    key: jax.Array
    state: Any
    t_hi: jax.Array
    t_lo: jax.Array
    n: jax.Array
    d: jax.Array
    best_index: jax.Array
    best_valid: jax.Array
    wants: jax.Array
    busy: jax.Array
    fresh: jax.Array
    f_hi: jax.Array
    f_lo: jax.Array
    qid: jax.Array
    cfg: nhb2.Config
    epoch: jax.Array
    acc: jax.Array
    cost: jax.Array


@struct.dataclass
class _Record:
    """One query's trajectory entries (see `Trajectory`)."""

    time: jax.Array
    cost: jax.Array
    epoch: jax.Array
    index: jax.Array
    valid_acc: jax.Array
    best_index: jax.Array
    best_valid: jax.Array


def _pad_record(shape: tuple[int, ...]) -> _Record:
    """The padding entries (after a run's last query; `time` is fixed up afterwards)."""
    f32, i32 = jnp.float32, jnp.int32
    return _Record(time=jnp.zeros(shape, f32), cost=jnp.zeros(shape, f32),
                   epoch=jnp.zeros(shape, i32), index=jnp.full(shape, -1, i32),
                   valid_acc=jnp.full(shape, jnp.nan, f32), best_index=jnp.full(shape, -1, i32),
                   best_valid=jnp.full(shape, jnp.nan, f32))


def _bind(strategy: Strategy, bench: Benchmark) -> Strategy:
    """The strategy searching the table's space unless bound already; checks the epochs."""
    if strategy.space is None and dataclasses.is_dataclass(strategy):
        strategy = strategy.on(bench.space)
    if strategy.sp.n_epochs != bench.n_epochs:
        raise ValueError(f"the strategy's space has {strategy.sp.n_epochs} epochs but the "
                         f"table has {bench.n_epochs}; bind it with strategy.on(bench.space)")
    return strategy


def check_workers(n_workers: int) -> int:
    """`n_workers` as an int, checked (a positive integer)."""
    if int(n_workers) != n_workers or int(n_workers) < 1:
        raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
    return int(n_workers)


def _simulate(keys: jax.Array, strategy: Strategy, params: Any, bench: Benchmark,
              budget: float | jax.Array, max_queries: int, seed: str | int,
              loop: str, n_workers: int = 1) -> Trajectory:
    """The runs of keys [R] in lockstep, each with `n_workers` simulated workers: one loop
    whose step completes each run's earliest-finishing query (tell, record) and refills its
    free workers (ask, query, charge); a run with nothing running writes padding.

    A query is asked and dispatched in one step, and looked up in the table (its cost fixing
    its finish time) at the start of the next; it is told when its worker finishes. So the
    table lookup and `tell` see the proposal as a loop value (the worker's slot): XLA:CPU
    would otherwise fuse the whole proposal (hashing, sampling, BOHB's KDE) into the gather
    and the strategy's buffer updates and redo it per element.
    """
    if loop not in ("while", "scan"):
        raise ValueError(f"loop {loop!r} is invalid; valid choices: ['while', 'scan']")
    check_workers(n_workers)
    strategy = _bind(strategy, bench)
    budget = jnp.asarray(budget, jnp.float32)
    q, w_n = max_queries, int(n_workers)
    f32, i32 = jnp.float32, jnp.int32
    slot = jnp.arange(w_n)

    def dispatch(r: _Run) -> _Run:
        """Asks and starts one query on the first free worker, if the run wants one (clock
        before the budget or `unchecked`, not `done`), may (`ready`) and has room (`q`)."""
        clock_ok = clock_before(r.t_hi, r.t_lo, budget) | strategy.unchecked(r.state, params)
        wants = clock_ok & ~strategy.done(r.state, params)
        free = ~r.busy
        go = wants & (r.d < q) & jnp.any(free) & strategy.ready(r.state, params)
        cfg, epoch, state = strategy.ask(rng.step_key(r.key, r.d), r.state, params)
        w = jnp.argmax(free)
        set_ = lambda a, v: put(a, w, v, go)
        return r.replace(
            state=jax.tree.map(lambda a, b: jnp.where(go, a, b), state, r.state),
            d=r.d + go, wants=wants, busy=set_(r.busy, True), fresh=set_(r.fresh, True),
            f_hi=set_(r.f_hi, r.t_hi), f_lo=set_(r.f_lo, r.t_lo), qid=set_(r.qid, r.d),
            cfg=jax.tree.map(set_, r.cfg, cfg), epoch=set_(r.epoch, epoch))

    def lookup(r: _Run) -> _Run:
        """Queries the table for the queries dispatched in the previous step (`fresh`: their
        `f_hi, f_lo` hold the start time) and sets their finish times."""
        if seed == "random":  # query d's table seed from step_key(step_key(key, d), 1)
            keys = jax.vmap(lambda i: rng.step_key(rng.step_key(r.key, i), 1))(r.qid)
            res = jax.vmap(lambda c, e, k: bench.query(c, e, seed=seed, mode="valid", key=k))(
                r.cfg, r.epoch, keys)
        else:
            res = bench.query(r.cfg, r.epoch, seed=seed, mode="valid")
        f_hi, f_lo = clock_add(r.f_hi, r.f_lo,
                               jnp.where(jnp.isfinite(res.cost), res.cost, 0.0))
        new = lambda a, b: jnp.where(r.fresh, a, b)
        return r.replace(fresh=jnp.zeros_like(r.fresh), f_hi=new(f_hi, r.f_hi),
                         f_lo=new(f_lo, r.f_lo), acc=new(res.valid_acc, r.acc),
                         cost=new(res.cost, r.cost))

    def refill(r: _Run) -> _Run:
        """Fills the free workers (one dispatch per worker at most)."""
        if w_n == 1:
            return dispatch(r)
        return jax.lax.fori_loop(0, w_n, lambda _, x: dispatch(x), r)

    def init(key: jax.Array) -> _Run:
        """No query yet, every worker free (the loop's first step dispatches)."""
        z = jnp.zeros((), f32)
        state = strategy.init(rng.step_key(key, 0xFFFFFFFF), params)
        cfg = nhb2.make(jnp.zeros((w_n, 6), jnp.int8), jnp.zeros(w_n, i32), jnp.zeros(w_n, i32))
        zw = jnp.zeros(w_n, f32)
        r = _Run(key=key, state=state, t_hi=z, t_lo=z, n=jnp.zeros((), i32),
                 d=jnp.zeros((), i32), best_index=jnp.full((), -1, i32),
                 best_valid=jnp.full((), jnp.nan, f32), wants=jnp.bool_(False),
                 busy=jnp.zeros(w_n, bool), fresh=jnp.zeros(w_n, bool), f_hi=zw, f_lo=zw,
                 qid=jnp.zeros(w_n, i32), cfg=cfg,
                 epoch=jnp.full(w_n, strategy.full_epoch, i32), acc=zw, cost=zw)
        return r

    def step(r: _Run) -> tuple[_Run, _Record]:
        """Completes the earliest-finishing query (ties: the first dispatched), tells and
        records it at its finish time; refills the free workers. (With nothing running, as
        in the first step, it only dispatches; a finished run stays as it is.)"""
        r = lookup(r)
        inf = jnp.float32(jnp.inf)
        first = r.busy & (r.f_hi == jnp.min(jnp.where(r.busy, r.f_hi, inf)))
        first &= r.f_lo == jnp.min(jnp.where(first, r.f_lo, inf))
        w = jnp.argmin(jnp.where(first, r.qid, jnp.iinfo(jnp.int32).max))
        active = jnp.any(r.busy)
        cfg = jax.tree.map(lambda a: a[w], r.cfg)
        acc, cost, epoch = r.acc[w], r.cost[w], r.epoch[w]
        state = strategy.tell(r.state, cfg, acc, params, cost)
        t_hi, t_lo = r.f_hi[w], r.f_lo[w]
        index = nhb2.to_index(cfg).astype(i32)
        better = (r.n == 0) | (acc > r.best_valid)
        best_index = jnp.where(better, index, r.best_index)
        best_valid = jnp.where(better, acc, r.best_valid)
        rec = _Record(time=t_hi + t_lo, cost=cost, epoch=epoch, index=index, valid_acc=acc,
                      best_index=best_index, best_valid=best_valid)
        told = r.replace(state=state, t_hi=t_hi, t_lo=t_lo, n=r.n + 1, best_index=best_index,
                         best_valid=best_valid, busy=r.busy & (slot != w))
        keep = lambda a, b: jnp.where(active, a, b)
        return refill(jax.tree.map(keep, told, r)), jax.tree.map(keep, rec, pad)

    runs = jax.vmap(init)(keys)
    n_runs = runs.n.shape[0]
    pad = _pad_record(())
    # step t >= 1 completes query t - 1 (at most q are dispatched); step 0 only dispatches
    # (its records, padding, are dropped), so the program holds one copy of `ask`
    if loop == "while":
        def cond(c: tuple[jax.Array, _Run, _Record]) -> jax.Array:
            return (c[0] <= q) & ((c[0] == 0) | jnp.any(c[1].busy))

        def body(c: tuple[jax.Array, _Run, _Record]) -> tuple[jax.Array, _Run, _Record]:
            t, runs, recs = c
            runs, rec = jax.vmap(step)(runs)
            return t + 1, runs, jax.tree.map(lambda a, v: a.at[t].set(v), recs, rec)

        _, runs, recs = jax.lax.while_loop(cond, body, (jnp.zeros((), i32), runs,
                                                        _pad_record((q + 1, n_runs))))
    else:
        runs, recs = jax.lax.scan(lambda r, _: jax.vmap(step)(r), runs, None, length=q + 1)
    recs = jax.tree.map(lambda a: a[1:].T, recs)  # [runs, q]
    final_time = (runs.t_hi + runs.t_lo)[:, None]
    best_test, best_200 = incumbent_scores(recs.best_index, bench, seed)
    return Trajectory(
        time=jnp.where(jnp.arange(q) >= runs.n[:, None], final_time, recs.time),
        cost=recs.cost, epoch=recs.epoch, index=recs.index, valid_acc=recs.valid_acc,
        best_index=recs.best_index, best_valid=recs.best_valid, best_test=best_test,
        best_200=best_200, n_queries=runs.n,
        truncated=((runs.d >= q) & runs.wants) | jax.vmap(strategy.overflowed)(runs.state))


def run(key: jax.Array, strategy: Strategy, params: Any, bench: Benchmark,
        budget: float | jax.Array, max_queries: int, seed: str | int = "official",
        loop: str = "while", n_workers: int = 1) -> Trajectory:
    """Simulates one search (jittable with `strategy`, `max_queries`, `seed`, `loop`,
    `n_workers` static).

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
        n_workers: simulated asynchronous workers (1: the sequential protocol).

    Returns:
        The run's `Trajectory` (queries in the order they finish).
    """
    traj = _simulate(jnp.expand_dims(key, 0), strategy, params, bench, budget, max_queries,
                     seed, loop, n_workers)
    return jax.tree.map(lambda a: a[0], traj)


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


# XLA:CPU options of the runner's programs (measured with jaxlib 0.10.2 on the 2-core CPU,
# 500 runs): XLA's loop-fusion emitters instead of its newer fusion emitters compile these
# programs faster (RE 1.7 -> 1.2 s, BOHB 3.8 -> 2.2 s) and run them as fast; with cheap
# steps, LLVM optimisation level 0 as well compiles them about 4x faster (RS 1.0 -> 0.24 s)
# for a run still well under a second (BOHB's KDE runs 20x slower at level 0, so BOHB keeps
# the default level). The trajectories do not change (tests/search_test.py's golden hashes).
CPU_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
CPU_FAST_COMPILE_OPTIONS = {**CPU_COMPILE_OPTIONS, "xla_backend_optimization_level": 0}


@functools.cache
def cpu_options_supported() -> bool:
    """Whether this jaxlib knows the options (names change across XLA versions)."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_FAST_COMPILE_OPTIONS).lower(
            jnp.zeros((), jnp.float32)).compile()
    except Exception:  # unknown option names raise backend-specific errors
        return False
    return True


def compiler_options(strategy: Strategy, backend: str | None = None) -> dict[str, Any]:
    """XLA compile options of `run_many`'s program for `strategy` on `backend` (None: the
    default backend): `CPU_FAST_COMPILE_OPTIONS` for `strategy.cheap_steps`, else
    `CPU_COMPILE_OPTIONS`, on the CPU; none elsewhere (or if this jaxlib lacks them)."""
    if (backend or jax.default_backend()) != "cpu" or not cpu_options_supported():
        return {}
    return dict(CPU_FAST_COMPILE_OPTIONS if strategy.cheap_steps else CPU_COMPILE_OPTIONS)


_RUN_MANY_STATIC = ("strategy", "n_runs", "max_queries", "seed", "loop", "n_workers")


def _run_many(key: jax.Array, strategy: Strategy, params: Any, bench: Benchmark,
              budget: float | jax.Array, n_runs: int, max_queries: int,
              seed: str | int = "official", loop: str = "while",
              n_workers: int = 1) -> Trajectory:
    """`n_runs` independent searches as one program; run i uses `step_key(key, i)`.

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
        n_workers: simulated asynchronous workers per run (static; 1: sequential).

    Returns:
        `Trajectory` with a leading runs axis.
    """
    keys = jax.vmap(lambda i: rng.step_key(key, i))(jnp.arange(n_runs))  # run i's key
    return _simulate(keys, strategy, params, bench, budget, max_queries, seed, loop,
                     n_workers)


class _RunMany:
    """`run_many`: `_run_many` jitted with the strategy's `compiler_options` (one jitted
    function per distinct options; `lower` as `jax.jit`'s, for timing compile and run)."""

    def __init__(self):
        self._jits: dict[tuple, Any] = {}
        self.__doc__ = _run_many.__doc__
        self.__wrapped__ = _run_many

    def _jit(self, strategy: Strategy) -> Any:
        opts = compiler_options(strategy)
        k = tuple(sorted(opts.items()))
        if k not in self._jits:
            self._jits[k] = jax.jit(_run_many, static_argnames=_RUN_MANY_STATIC,
                                    compiler_options=opts or None)
        return self._jits[k]

    @staticmethod
    def _strategy(args: tuple, kwargs: dict) -> Strategy:
        return kwargs["strategy"] if "strategy" in kwargs else args[1]

    def __call__(self, *args: Any, **kwargs: Any) -> Trajectory:
        return self._jit(self._strategy(args, kwargs))(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """`jax.jit(...).lower` of the strategy's jitted function."""
        return self._jit(self._strategy(args, kwargs)).lower(*args, **kwargs)


run_many = _RunMany()
