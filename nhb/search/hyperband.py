"""Successive halving and Hyperband over epochs, scheduled exactly as hpbandster does.

Budgets (hpbandster `HyperBand`/`BOHB`): `max_SH_iter = -int(log(min/max) / log(eta)) + 1` and
`budgets = max * eta^-[max_SH_iter-1, ..., 0]`; with eta 3, min 1, max 12 these are
1.33 / 4 / 12 epochs, queried at `int(budget)` = 1 / 4 / 12 epochs (the reference worker's
`iepoch=int(budget)`). Iteration i runs the bracket `s = max_SH_iter - 1 - i % max_SH_iter`
with `n0 = ceil(floor(max_SH_iter / (s+1)) * eta^s)` configs and `ns = [max(int(n0 eta^-k), 1)]`
per stage (9-3-1, 3-1, 3 for the reference), one query at a time with one worker (the
reference; with several, `ready` holds a stage's promotions until all its results are told:
synchronous Hyperband, and results are stored in the order they finish):

- a stage's configs are evaluated in creation order; a new config is sampled right before
  its evaluation (so a model sees every earlier result);
- when a stage ends, the configs with a finite loss (`100 - valid acc`) are ranked by loss
  (ties by creation order) and the best `ns[k+1]` advance, keeping creation order; each is
  re-queried from epoch 0 at the larger budget (and charged in full again);
- slots left empty because configs failed (NaN) are filled with new samples.

On a sub-space (a sub-grid table) new configs are uniform over the space
(`sampling.sample`); promotions only re-query configs already in it. On a table of n != 12
epochs the default `max_budget` (12, "a full query") becomes n (e.g. budgets 1 / 3 for n = 3);
Hyperband needs n > `min_budget`.

`SuccessiveHalving` repeats the most aggressive bracket (s = max_SH_iter - 1) only.
`n_iterations` stops the strategy after that many iterations (hpbandster's `run(n)`); None
runs until the runner's budget. Subclasses replace the uniform sampler (`BOHB`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.search.base import FULL_EPOCH, Strategy, put
from nhb.space import cells as _cells
from nhb.space import nhb2


def schedule(eta: float, min_budget: float, max_budget: float) -> dict[str, np.ndarray]:
    """hpbandster's Hyperband schedule.

    Args:
        eta: halving rate (>= 2).
        min_budget: smallest budget (epochs, may be fractional).
        max_budget: largest budget.

    Returns:
        Dict: `budgets` float [M], `epochs` int [M] (`int(budget)`, at least 1), `ns` int
        [M, M] configs per (bracket s, stage k) (0 beyond stage s).
    """
    if eta < 2 or not 0 < min_budget < max_budget:
        raise ValueError(f"need eta >= 2 and 0 < min_budget < max_budget; got eta={eta}, "
                         f"min_budget={min_budget}, max_budget={max_budget}")
    m = -int(np.log(min_budget / max_budget) / np.log(eta)) + 1
    budgets = max_budget * np.power(eta, -np.linspace(m - 1, 0, m))
    ns = np.zeros((m, m), np.int32)
    for s in range(m):
        n0 = np.ceil(np.floor(m / (s + 1)) * eta**s)
        ns[s, :s + 1] = [max(int(n0 * eta ** (-k)), 1) for k in range(s + 1)]
    epochs = np.maximum(budgets.astype(np.int64), 1).astype(np.int32)
    return dict(budgets=budgets, epochs=epochs, ns=ns)


@struct.dataclass
class HBState:
    """Bracket bookkeeping (shared by SH, Hyperband and BOHB).

    Attributes:
        iteration: int32 iterations (brackets) started.
        stage: int32 stage within the bracket.
        pos: int32 results told in the stage (the next one's slot in `buf`).
        asked: int32 queries asked in the stage (= `pos` with one worker; more with several:
            asked but not yet told).
        n_prom: int32 promoted configs at the head of `buf` for this stage.
        buf: `nhb2.Config` [max_n] the stage's configs in creation order.
        loss: float32 [max_n] their losses at this stage (inf if failed).
        sampler: the config sampler's state (None for uniform sampling).
    """

    iteration: jax.Array
    stage: jax.Array
    pos: jax.Array
    asked: jax.Array
    n_prom: jax.Array
    buf: nhb2.Config
    loss: jax.Array
    sampler: Any


@dataclasses.dataclass(frozen=True)
class Hyperband(Strategy):
    """Hyperband with uniform sampling (hpbandster `HyperBand`), stage by stage.

    Attributes:
        eta: halving rate.
        min_budget: smallest budget in epochs (1 -> budgets 1.33/4/12 with eta 3, max 12).
        max_budget: largest budget in epochs (the default 12 = a full query: the space's
            `n_epochs` on a table of another length).
        n_iterations: stop after this many brackets (None: run until the time budget).
        space: the space searched (None: full).
    """

    eta: float = 3
    min_budget: float = 1
    max_budget: float = 12
    n_iterations: int | None = None
    space: SearchSpace | None = None
    name = "hyperband"
    only_largest_bracket = False

    @property
    def sched(self) -> dict[str, np.ndarray]:
        """The static schedule (see `schedule`) for the space's epochs."""
        n = self.sp.n_epochs
        top = n if self.max_budget == FULL_EPOCH else self.max_budget
        if top > n or top <= self.min_budget:
            raise ValueError(f"{self.name}: budgets {self.min_budget}..{top} epochs do not fit "
                             f"a table of {n} epochs (need min_budget < max_budget <= {n})")
        return schedule(self.eta, self.min_budget, top)

    # -------------------------------------------------------------- sampler hooks

    def sampler_init(self, key: jax.Array, params: Any) -> Any:
        """Initial sampler state."""
        del key, params

    def propose(self, key: jax.Array, sampler: Any, params: Any) -> nhb2.Config:
        """A new config (uniform over the space)."""
        del sampler, params
        sp = self.sp
        return sampling.sample(rng.uniforms(key, sampling.n_sample(sp)), sp)

    def observe(self, sampler: Any, cfg: nhb2.Config, loss: jax.Array, budget_index: jax.Array,
                params: Any) -> Any:
        """Records a result at budget `budget_index` (nothing for uniform sampling)."""
        del cfg, loss, budget_index, params
        return sampler

    # -------------------------------------------------------------- protocol

    def _bracket(self, iteration: jax.Array) -> jax.Array:
        m = len(self.sched["budgets"])
        if self.only_largest_bracket:
            return jnp.int32(m - 1)
        return (m - 1 - iteration % m).astype(jnp.int32)

    def init(self, key: jax.Array, params: Any) -> HBState:
        """Bracket 0, stage 0, an empty buffer."""
        max_n = int(self.sched["ns"].max())
        buf = nhb2.make(jnp.zeros((max_n, _cells.NUM_EDGES)), jnp.zeros(max_n),
                        jnp.zeros(max_n))
        zero = jnp.zeros((), jnp.int32)
        return HBState(iteration=zero, stage=zero, pos=zero, asked=zero, n_prom=zero, buf=buf,
                       loss=jnp.full(max_n, jnp.inf, jnp.float32),
                       sampler=self.sampler_init(key, params))

    def budget_index(self, state: HBState) -> jax.Array:
        """Index into the budgets of the current stage."""
        m = len(self.sched["budgets"])
        return m - 1 - self._bracket(state.iteration) + state.stage

    def ask(self, key: jax.Array, state: HBState,
            params: Any) -> tuple[nhb2.Config, jax.Array, HBState]:
        """The next promoted config of the stage, or a new sample; at the stage's epochs."""
        epoch = jnp.asarray(self.sched["epochs"])[self.budget_index(state)]
        promoted = state.asked < state.n_prom
        held = jax.tree.map(lambda a: a[state.asked], state.buf)
        new = self.propose(key, state.sampler, params)
        cfg = jax.tree.map(lambda a, b: jnp.where(promoted, a, b.astype(a.dtype)), held, new)
        return cfg, epoch, state.replace(asked=state.asked + 1)

    def ready(self, state: HBState, params: Any) -> jax.Array:
        """Until the stage's configs are all asked: the promotions wait for its results."""
        del params
        ns = jnp.asarray(self.sched["ns"])
        return state.asked < ns[self._bracket(state.iteration), state.stage]

    def tell(self, state: HBState, cfg: nhb2.Config, fitness: jax.Array, params: Any,
             cost: jax.Array | float = 0.0) -> HBState:
        """Stores the result; ends the stage (promotion) or the bracket when complete.

        Results are stored in the order they are told (with several workers not always the
        order asked: the stage's ranking then breaks exact ties by that order); a promoted
        slot is overwritten only once asked, as at most `asked` results are told.
        """
        del cost
        ns = jnp.asarray(self.sched["ns"])
        loss = (100.0 - fitness).astype(jnp.float32)
        loss = jnp.where(jnp.isfinite(loss), loss, jnp.inf)
        bidx = self.budget_index(state)
        sampler = self.observe(state.sampler, cfg, loss, bidx, params)
        buf = jax.tree.map(lambda a, b: put(a, state.pos, b), state.buf, cfg)
        losses = put(state.loss, state.pos, loss)
        pos = state.pos + 1
        s = self._bracket(state.iteration)
        n_stage = ns[s, state.stage]
        stage_done = pos >= n_stage
        last = state.stage >= s
        n_next = jnp.where(last, 0, ns[s, jnp.minimum(state.stage + 1, ns.shape[1] - 1)])
        slot = jnp.arange(losses.shape[0])
        in_stage = slot < n_stage
        lj, li = losses[None, :], losses[:, None]
        before = (lj < li) | ((lj == li) & (slot[None, :] < slot[:, None]))
        rank = jnp.sum(before & in_stage[None, :], axis=1)
        advance = in_stage & jnp.isfinite(losses) & (rank < n_next)
        order = jnp.argsort(~advance, stable=True)
        promoted_buf = jax.tree.map(lambda a: a[order], buf)
        end_bracket = stage_done & last
        next_stage = stage_done & ~last
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(next_stage, x, y), a, b)
        return HBState(
            iteration=state.iteration + end_bracket.astype(jnp.int32),
            stage=jnp.where(end_bracket, 0, state.stage + next_stage.astype(jnp.int32)),
            pos=jnp.where(stage_done, 0, pos),
            asked=jnp.where(stage_done, 0, state.asked),
            n_prom=jnp.where(end_bracket, 0, jnp.where(next_stage, advance.sum(),
                                                       state.n_prom)).astype(jnp.int32),
            buf=pick(promoted_buf, buf),
            loss=jnp.where(stage_done, jnp.inf, losses),
            sampler=sampler)

    def unchecked(self, state: HBState, params: Any) -> jax.Array:
        """With `n_iterations` set the run is bounded by iterations only, not by the clock
        (the reference's `BOHB.run(n_iters)` never looks at the time)."""
        del state, params
        return jnp.bool_(self.n_iterations is not None)

    def iteration_queries(self, n: int) -> int:
        """Queries made by the first n iterations."""
        ns = self.sched["ns"]
        m = ns.shape[0]
        return int(sum(ns[m - 1 if self.only_largest_bracket else m - 1 - i % m].sum()
                       for i in range(n)))

    def query_bound(self, bench: Any, budget: float, seed: str | int = "official") -> int:
        """Exact for `n_iterations`, else the budget at the cheapest smallest-budget query."""
        if self.n_iterations is not None:
            return self.iteration_queries(self.n_iterations)
        return math.ceil(budget / bench.min_cost(int(self.sched["epochs"][0]), seed)) + 1

    def done(self, state: HBState, params: Any) -> jax.Array:
        """True after `n_iterations` brackets (never if None)."""
        del params
        if self.n_iterations is None:
            return jnp.bool_(False)
        return state.iteration >= self.n_iterations


@dataclasses.dataclass(frozen=True)
class SuccessiveHalving(Hyperband):
    """Successive halving: the most aggressive Hyperband bracket (9-3-1 at 1/4/12 epochs for
    the reference settings), repeated."""

    name = "sh"
    only_largest_bracket = True
