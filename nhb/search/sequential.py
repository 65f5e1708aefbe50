"""Sequential baselines: HPO on one random cell, then NAS with the hyperparameters fixed.

As the reference `bench_algos/rs_then_rea.py` / `bohb_then_rea.py`: a uniform random cell
(of the 4096) is drawn; phase 1 searches (lr, bs) for it with random search (while the clock
is below `hpo_budget`, 5,000 s, checked before each query) or BOHB (`bohb_hpo.py`: 4 Hyperband
iterations, num_samples 5, the 3-dimensional (cellcode, lr, bs) space; `hpo_iterations=None`
stops at `hpo_budget` instead); phase 2 is regularized evolution over cells only
(`rea_nas.py`) with lr/bs fixed to the phase-1 incumbent (best valid accuracy of all phase-1
queries, partial BOHB ones included), until the overall budget. The clock and the incumbent
run over both phases (the reference never resets the client's log between them). The
reference reseeds Python's RNG before phase 2, so the first member of RE's initial population
is the phase-1 cell again; this is reproduced (`repeat_hpo_cell`).

The strategy's own clock (for `hpo_budget`) charges exactly what the runner charges: the
query's cost, or 0 s for a non-finite cost (a failed / absent entry), so a NaN cost never ends
phase 1 early. On a sub-space (a sub-grid table) the phase-1 cell is uniform over the covered
cells, random search draws (lr, bs) uniformly over the allowed values, BOHB models the allowed
values only (see `nhb.search.bohb`), and RE mutates cells within the covered ones
(`sampling.mutate` with `arch_only`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.search.base import Strategy, clock_add, clock_before
from nhb.search.bohb import BOHB
from nhb.search.evolution import RegularizedEvolution
from nhb.space import nhb2


@struct.dataclass
class SeqState:
    """State of a sequential run.

    Attributes:
        phase: int32 phase of the last ask (0 HPO, 1 NAS).
        t_hi, t_lo: float32 compensated clock: the seconds charged by the queries told (the
            runner's clock with one worker; with several, their summed busy time).
        cell: int8 [6] the phase-1 cell.
        hpo: the phase-1 strategy state (None for random search).
        nas: the regularized-evolution state.
        n_hpo: int32 phase-1 queries told.
        asked_hpo: int32 phase-1 queries asked (more than `n_hpo` while some still run).
        best_lr, best_bs: int32 phase-1 incumbent's hyperparameters.
        best_valid: float32 its validation accuracy.
    """

    phase: jax.Array
    t_hi: jax.Array
    t_lo: jax.Array
    cell: jax.Array
    hpo: Any
    nas: Any
    n_hpo: jax.Array
    asked_hpo: jax.Array
    best_lr: jax.Array
    best_bs: jax.Array
    best_valid: jax.Array


def _select(pred: jax.Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y.astype(x.dtype)), a, b)


@dataclasses.dataclass(frozen=True)
class Sequential(Strategy):
    """HPO (random search or BOHB) on a random cell, then RE over cells (reference settings).

    Attributes:
        hpo: "rs" or "bohb".
        hpo_budget: simulated seconds of the HPO phase (checked before each HPO query;
            seconds charged, so with several workers their summed busy time).
        hpo_iterations: BOHB iterations of the HPO phase (4 as the reference; None: until
            `hpo_budget`). Ignored for random search.
        hpo_num_samples: BOHB candidates per sample in the HPO phase (5 in `bohb_then_rea.py`).
        population_size: RE population.
        sample_size: RE tournament size.
        repeat_hpo_cell: the first RE member uses the phase-1 cell (the reference's reseeding).
        space: the space searched (None: full).
    """

    hpo: str = "rs"
    hpo_budget: float = 5000.0
    hpo_iterations: int | None = 4
    hpo_num_samples: int = 5
    population_size: int = 10
    sample_size: int = 3
    repeat_hpo_cell: bool = True
    space: SearchSpace | None = None

    def __post_init__(self):
        if self.hpo not in ("rs", "bohb"):
            raise ValueError(f"hpo {self.hpo!r} is invalid; valid choices: ['rs', 'bohb']")

    @property
    def name(self) -> str:
        """rs_re or bohb_re."""
        return f"{self.hpo}_re"

    @property
    def cheap_steps(self) -> bool:
        """False with BOHB's HPO phase (its KDE is in every step's program)."""
        return self.hpo != "bohb"

    @property
    def _re(self) -> RegularizedEvolution:
        return RegularizedEvolution(self.population_size, self.sample_size, arch_only=True,
                                    space=self.space)

    @property
    def _bohb(self) -> BOHB:
        return BOHB(n_iterations=self.hpo_iterations, num_samples=self.hpo_num_samples,
                    hpo_only=True, space=self.space)

    def default_params(self) -> Any:
        """BOHB's params for the HPO phase (none for random search)."""
        return self._bohb.default_params() if self.hpo == "bohb" else ()

    def init(self, key: jax.Array, params: Any) -> SeqState:
        """Draws the phase-1 cell; both phases' initial states."""
        k_cell, k_hpo, k_nas = (rng.step_key(key, i) for i in range(3))
        sp = self.sp
        cell = sampling.sample(rng.uniforms(k_cell, sampling.n_sample(sp)), sp).cell
        hpo = None
        if self.hpo == "bohb":
            hpo = self._bohb.init(k_hpo, params)
            hpo = hpo.replace(sampler=hpo.sampler.replace(fixed_cell=cell))
        z, f = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32)
        return SeqState(phase=z, t_hi=f, t_lo=f, cell=cell, hpo=hpo,
                        nas=self._re.init(k_nas, ()), n_hpo=z, asked_hpo=z, best_lr=z, best_bs=z,
                        best_valid=jnp.full((), jnp.nan, jnp.float32))

    def _in_hpo(self, state: SeqState, params: Any) -> jax.Array:
        clock_ok = clock_before(state.t_hi, state.t_lo, jnp.float32(self.hpo_budget))
        if self.hpo == "rs":
            go = clock_ok
        elif self.hpo_iterations is None:
            go = clock_ok & ~self._bohb.done(state.hpo, params)
        else:
            go = ~self._bohb.done(state.hpo, params)
        return (state.phase == 0) & go

    def ask(self, key: jax.Array, state: SeqState,
            params: Any) -> tuple[nhb2.Config, jax.Array, SeqState]:
        """An HPO query while phase 1 lasts, else an RE query with the fixed lr/bs."""
        k_hpo, k_nas = rng.step_key(key, 0), rng.step_key(key, 1)
        in_hpo = self._in_hpo(state, params)
        if self.hpo == "rs":
            sp = self.sp
            cfg_h = sampling.sample(rng.uniforms(k_hpo, sampling.n_sample(sp)), sp).replace(
                cell=state.cell)
            ep_h, hpo = jnp.int32(self.full_epoch), state.hpo
        else:
            cfg_h, ep_h, hpo = self._bohb.ask(k_hpo, state.hpo, params)
        cfg_n, ep_n, nas = self._re.ask(k_nas, state.nas, ())
        first = (state.phase == 0) & self.repeat_hpo_cell  # the first phase-2 ask
        cfg_n = nhb2.make(jnp.where(first, state.cell, cfg_n.cell), state.best_lr, state.best_bs)
        cfg = _select(in_hpo, cfg_h, cfg_n)
        if hpo is not None:
            hpo = _select(in_hpo, hpo, state.hpo)
        return cfg, jnp.where(in_hpo, ep_h, ep_n), state.replace(
            phase=jnp.where(in_hpo, 0, 1).astype(jnp.int32), hpo=hpo,
            nas=_select(in_hpo, state.nas, nas), asked_hpo=state.asked_hpo + in_hpo)

    def ready(self, state: SeqState, params: Any) -> jax.Array:
        """Phase 1 as its strategy says; phase 2 only once every phase-1 query is told (it
        needs phase 1's incumbent hyperparameters)."""
        if self.hpo == "bohb":
            hpo_ready = self._bohb.ready(state.hpo, params)
        else:
            hpo_ready = jnp.bool_(True)
        in_hpo = self._in_hpo(state, params)
        return jnp.where(in_hpo, hpo_ready, state.asked_hpo == state.n_hpo)

    def tell(self, state: SeqState, cfg: nhb2.Config, fitness: jax.Array, params: Any,
             cost: jax.Array | float = 0.0) -> SeqState:
        """Updates the phase that asked the query (phase 1 while any of its queries runs:
        phase 2 starts only after they are all told); advances the clock."""
        in_hpo = state.asked_hpo > state.n_hpo
        hpo = state.hpo
        if self.hpo == "bohb":
            hpo = _select(in_hpo, self._bohb.tell(hpo, cfg, fitness, params), hpo)
        nas = _select(in_hpo, state.nas, self._re.tell(state.nas, cfg, fitness, ()))
        better = in_hpo & ((state.n_hpo == 0) | (fitness > state.best_valid))
        cost = jnp.asarray(cost, jnp.float32)
        charged = jnp.where(jnp.isfinite(cost), cost, 0.0)  # as the runner's clock
        t_hi, t_lo = clock_add(state.t_hi, state.t_lo, charged)
        return state.replace(
            t_hi=t_hi, t_lo=t_lo, hpo=hpo, nas=nas, n_hpo=state.n_hpo + in_hpo,
            best_lr=jnp.where(better, cfg.lr, state.best_lr),
            best_bs=jnp.where(better, cfg.bs, state.best_bs),
            best_valid=jnp.where(better, fitness, state.best_valid))

    def query_bound(self, bench: Any, budget: float, seed: str | int = "official") -> int:
        """Budgeted full queries, RE's unchecked population and an iteration-bounded BOHB."""
        n = super().query_bound(bench, budget, seed) + self.population_size
        if self.hpo == "bohb":
            n += (self._bohb.iteration_queries(self.hpo_iterations) if self.hpo_iterations
                  is not None else self._bohb.query_bound(bench, self.hpo_budget, seed))
        return n

    def overflowed(self, state: SeqState) -> jax.Array:
        """Whether phase 1's BOHB dropped an observation."""
        return self._bohb.overflowed(state.hpo) if self.hpo == "bohb" else jnp.bool_(False)

    def unchecked(self, state: SeqState, params: Any) -> jax.Array:
        """RE's initial population (after phase 1) ignores the budget, and so does a BOHB
        phase 1 bounded by iterations (the reference never looks at the clock there)."""
        in_hpo = self._in_hpo(state, params)
        bohb_iters = self.hpo == "bohb" and self.hpo_iterations is not None
        return (in_hpo & bohb_iters) | (~in_hpo & (state.nas.n < self.population_size))
