"""Multi-objective regularized evolution and random search (the objectives of
`nhb.search.hypervolume`: validation error, parameters, FLOPs, training time; all minimised).

`MORegularizedEvolution` ("mo_re") is regularized evolution (`nhb.search.evolution`: the same
population ring buffer, unchecked initial population, tournament of `sample_size` members
drawn with replacement, mutation and aging) whose tournament compares members on several
objectives. Selection (`selection`):

- "pareto" (default): the drawn member dominated by the fewest population members wins
  (Pareto ranking by dominance count, Fonseca & Fleming 1993, "Genetic algorithms for
  multiobjective optimization: formulation, discussion and generalization"), as Syne Tune's
  multi-objective regularized evolution (`MultiObjectiveRegularizedEvolution`: aging
  population, parent = the sampled member of best non-dominated-sort priority; Salinas et
  al. 2021, "A multi-objective perspective on jointly tuning hardware and hyperparameters").
  Among equally ranked members the first drawn wins (RE's rule), not an epsilon-net or a
  crowding distance: a crowding tie-break changed nothing measurable here.
- "chebyshev": ParEGO's random scalarisations (Knowles 2006, "ParEGO: a hybrid algorithm with
  on-line landscape approximation for expensive multiobjective optimization problems", IEEE
  TEC 10(1)): every ask draws a weight vector w uniformly on the simplex (normalised
  exponential spacings; ParEGO draws from a uniform lattice of it) and the drawn member of
  smallest augmented Chebyshev value max_i w_i f~_i + rho sum_i w_i f~_i wins (rho = 0.05,
  ParEGO's), f~ the objectives min-max normalised by the best and worst values observed so
  far (ParEGO's "estimated limits"; the strategy does not see the table).

Defaults, measured on `synthetic.separable_table`s (accuracy rises with the conv edges, which
also cost parameters and FLOPs), hypervolume of (valid_error, params) after 30 to 300 full
queries: "pareto" beats "chebyshev" (whose random directions mostly favour the cheap end of
the flat normalised front, so its population drifts to small models), and a population of 20
with tournaments of 5 beats RE's 10 / 3 (a population has to hold a front, not one
incumbent's neighbourhood) at every budget from 30 to 300 queries; 50 / 10 (Syne Tune's defaults
are 100 / 10) does as well from about 100 queries on but is random search until its
population is full (at `fake.random_table`'s costs, a few hundred seconds per full query,
the paper's 20,000 s buy about 50 full queries). With op weights (2, 0.5, 0.25, 0) and hp
slope 0.5 (tests/mo_evolution_test.py: 100 full queries, mean of 200 runs) mo_re beat RE by
0.006 to 0.017 and RS by 0.023 to 0.031 on each of 6 base keys (hypervolume at most 1.21);
with the default op weights (2, 1, 0.5, 0), where the lr / batch size dominate the error, it
beat RE by 0.008 to 0.02 at 30 to 150 queries (60 runs, one key). On a table without
structure (`fake.random_table`) no method beats random search, mo_re included.
Failed (NaN) members rank last. With the single objective ("valid_error",) and RE's sizes both
selections pick RE's winner, so the runs are RE's (tested).

Objectives inside the strategy: it receives only `tell(state, cfg, fitness, params, cost)`:
valid_error = 100 - fitness, params / flops from the queried cell through the constant
paper-scale tables (`nhb.bench.objectives.objective_tables`; at another network scale the
counts differ by an increasing affine map, which neither the dominance ranking nor the
min-max normalised Chebyshev value sees), train_time = cost.

`MORandomSearch` ("mo_rs") is random search itself: it does not use any objective to propose,
so its multi-objective variant is plain RS whose runs are scored by hypervolume
(`nhb.search.hypervolume.hypervolume_over_time`); only the name differs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench import objectives as bench_objectives
from nhb.bench.subspace import SearchSpace
from nhb.search import rng, sampling
from nhb.search.base import Strategy, put
from nhb.search.evolution import _take
from nhb.search.hypervolume import DEFAULT_OBJECTIVES, check_objectives, query_objectives
from nhb.search.random_search import RandomSearch
from nhb.space import cells as _cells
from nhb.space import nhb2

SELECTIONS = ("pareto", "chebyshev")
PAREGO_RHO = 0.05


@struct.dataclass
class MOREParams:
    """Numeric settings of `MORegularizedEvolution`.

    Attributes:
        rho: weight of the augmentation term of the Chebyshev scalarisation (ParEGO: 0.05).
    """

    rho: jax.Array


@struct.dataclass
class MOREState:
    """Multi-objective regularized-evolution state.

    Attributes:
        pop: `nhb2.Config` [P] members (slot order, not age order).
        objs: float32 [P, m] their raw objectives (NaN for a failed query or an empty slot).
        lo: float32 [m] best value of each objective over the finite observations so far
            (+inf before any).
        hi: float32 [m] worst value (-inf before any).
        n: int32 members added so far (`n < P` while filling).
        head: int32 slot of the oldest member once full.
    """

    pop: nhb2.Config
    objs: jax.Array
    lo: jax.Array
    hi: jax.Array
    n: jax.Array
    head: jax.Array


def simplex_weights(u: jax.Array) -> jax.Array:
    """A uniform point of the probability simplex from m uniforms in [0, 1) (normalised
    exponential spacings, -log(1 - u) / sum; for m = 2: (e1, e2) / (e1 + e2)).

    Args:
        u: float [..., m].

    Returns:
        float32 [..., m], non-negative, summing to 1.
    """
    e = -jnp.log1p(-jnp.asarray(u, jnp.float32))
    total = jnp.sum(e, -1, keepdims=True)
    return jnp.where(total > 0, e / jnp.where(total > 0, total, 1.0), 1.0 / e.shape[-1])


def normalise(objs: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """(objs - lo) / (hi - lo) per objective (last axis; a zero range counts as 1)."""
    span = hi - lo
    return (objs - lo) / jnp.where(span > 0, span, 1.0)


def chebyshev(f: jax.Array, weights: jax.Array, rho: jax.Array | float = PAREGO_RHO
              ) -> jax.Array:
    """ParEGO's augmented Chebyshev scalarisation max_i w_i f_i + rho sum_i w_i f_i
    (smaller is better; +inf where any f_i is not finite).

    Args:
        f: float [..., m] normalised objectives.
        weights: float [m].
        rho: augmentation weight.

    Returns:
        float32 [...].
    """
    wf = f * weights
    g = jnp.max(wf, -1) + rho * jnp.sum(wf, -1)
    return jnp.where(jnp.all(jnp.isfinite(f), -1), g, jnp.inf).astype(jnp.float32)


def dominance_count(f: jax.Array, of: jax.Array | None = None) -> jax.Array:
    """How many rows of f dominate each row of `of` (default f): <= in every objective and
    < in one (minimised). A row with a non-finite value dominates nothing, and gets
    `len(f)` (ranks last) in `of`.

    Args:
        f: float [n, m] the population.
        of: float [k, m] the rows to rank (e.g. a tournament's members); None: f.

    Returns:
        int32 [k].
    """
    of = f if of is None else of
    ok = jnp.all(jnp.isfinite(f), -1)
    le = jnp.all(f[:, None, :] <= of[None, :, :], -1)
    lt = jnp.any(f[:, None, :] < of[None, :, :], -1)
    count = jnp.sum(le & lt & ok[:, None], 0, dtype=jnp.int32)
    return jnp.where(jnp.all(jnp.isfinite(of), -1), count, f.shape[0])


@dataclasses.dataclass(frozen=True)
class MORegularizedEvolution(Strategy):
    """Regularized evolution with a multi-objective tournament (see the module docstring).

    Attributes:
        population_size: P.
        sample_size: tournament size S (sampled with replacement).
        objectives: names from `nhb.search.hypervolume.OBJECTIVES` (minimised).
        selection: "pareto" (fewest dominating members) or "chebyshev" (a random ParEGO
            scalarisation per ask).
        arch_only: mutate only the cell (lr/bs kept).
        space: the space searched (None: full).
    """

    population_size: int = 20
    sample_size: int = 5
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    selection: str = "pareto"
    arch_only: bool = False
    space: SearchSpace | None = None
    name = "mo_re"

    def __post_init__(self):
        object.__setattr__(self, "objectives", check_objectives(self.objectives))
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection {self.selection!r} is invalid; valid choices: "
                             f"{list(SELECTIONS)}")

    def default_params(self) -> MOREParams:
        """ParEGO's augmentation weight."""
        return MOREParams(rho=jnp.float32(PAREGO_RHO))

    def init(self, key: jax.Array, params: MOREParams) -> MOREState:
        """An empty population."""
        del key, params
        p, m = self.population_size, len(self.objectives)
        pop = nhb2.make(jnp.zeros((p, _cells.NUM_EDGES)), jnp.zeros(p), jnp.zeros(p))
        return MOREState(pop=pop, objs=jnp.full((p, m), jnp.nan, jnp.float32),
                         lo=jnp.full(m, jnp.inf, jnp.float32),
                         hi=jnp.full(m, -jnp.inf, jnp.float32), n=jnp.zeros((), jnp.int32),
                         head=jnp.zeros((), jnp.int32))

    def n_uniforms(self) -> tuple[int, int, int, int]:
        """Uniforms of one ask, in order: sample, tournament picks, mutation, weights."""
        sp = self.sp
        return (sampling.n_sample(sp), self.sample_size,
                sampling.n_mutate(sp, self.arch_only), len(self.objectives))

    def tournament_scores(self, state: MOREState, picks: jax.Array, weights: jax.Array,
                          params: MOREParams) -> jax.Array:
        """The drawn members' scores, smaller is better (float32 [S]; failed or empty slots
        rank last): their dominance count in the population, or their Chebyshev value for
        `weights`."""
        objs = state.objs[picks]
        if self.selection == "pareto":
            return dominance_count(state.objs, objs).astype(jnp.float32)
        return chebyshev(normalise(objs, state.lo, state.hi), weights, params.rho)

    def ask(self, key: jax.Array, state: MOREState,
            params: MOREParams) -> tuple[nhb2.Config, jax.Array, MOREState]:
        """A random config while filling, else the mutated winner of a tournament."""
        sp = self.sp
        n_s, n_t, n_m, n_w = self.n_uniforms()
        u = rng.uniforms(key, n_s + n_t + n_m + n_w)
        picks = rng.randint(u[n_s:n_s + n_t], self.population_size)
        score = self.tournament_scores(state, picks, simplex_weights(u[n_s + n_t + n_m:]),
                                       params)
        parent = _take(state.pop, picks[jnp.argmin(score)])
        child = sampling.mutate(u[n_s + n_t:n_s + n_t + n_m], parent, sp, self.arch_only)
        filling = state.n < self.population_size
        cfg = jax.tree.map(lambda a, b: jnp.where(filling, a, b), sampling.sample(u[:n_s], sp),
                           child)
        return cfg, jnp.int32(self.full_epoch), state

    def tell(self, state: MOREState, cfg: nhb2.Config, fitness: jax.Array, params: MOREParams,
             cost: jax.Array | float = 0.0) -> MOREState:
        """Appends the child (its objectives; once full it replaces the oldest member) and
        widens the observed ranges by a query with finite objectives."""
        del params
        tables = bench_objectives.objective_tables()
        raw = query_objectives(self.objectives, fitness, nhb2.cell_index(cfg.cell), cost,
                               tables.params, tables.flops)
        ok = jnp.all(jnp.isfinite(raw))
        filling = state.n < self.population_size
        slot = jnp.where(filling, state.n, state.head)
        pop = jax.tree.map(lambda a, b: put(a, slot, b), state.pop, cfg)
        head = jnp.where(filling, state.head, (state.head + 1) % self.population_size)
        return MOREState(pop=pop, objs=put(state.objs, slot, raw),
                         lo=jnp.where(ok, jnp.minimum(state.lo, raw), state.lo),
                         hi=jnp.where(ok, jnp.maximum(state.hi, raw), state.hi),
                         n=state.n + 1, head=head)

    def query_bound(self, bench: Any, budget: float, seed: str | int = "official") -> int:
        """The budget's full queries plus the unchecked initial population."""
        return super().query_bound(bench, budget, seed) + self.population_size

    def unchecked(self, state: MOREState, params: MOREParams) -> jax.Array:
        """The initial population is queried without checking the budget."""
        del params
        return state.n < self.population_size


@dataclasses.dataclass(frozen=True)
class MORandomSearch(RandomSearch):
    """Random search under its multi-objective name: the proposals are RS's (it uses no
    objective), the runs are scored by hypervolume (see the module docstring)."""

    space: SearchSpace | None = None
    name = "mo_rs"
