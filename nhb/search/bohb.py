"""BOHB (Falkner et al. 2018): Hyperband whose new configs come from hpbandster's TPE-style KDE.

The config generator follows hpbandster's `config_generators/bohb.py` with statsmodels'
`KDEMultivariate` (all dimensions categorical, var type 'u'):

- every result at budget b is recorded, unless a model already exists at a larger budget;
  loss = 100 - valid acc (inf if not finite);
- a model exists at b once its observations allow it: n >= min_points_in_model (default
  dim + 1), `n_good = max(min_points, top_n_percent * n // 100)` (top 15 %), `n_bad =
  max(min_points, (100 - top_n_percent) * n // 100)`, good = the n_good lowest losses, bad =
  the next n_bad, and both sets have more rows than dimensions (so 18 results for the 8-dim
  joint space); it is (re)fit on all recorded results at b, so it is computed here from the
  observation buffer when a config is sampled;
- each KDE: bandwidth per dimension `1.06 * std * n^(-1 / (4 + dim))` (statsmodels'
  normal_reference, population std of the category indices), clipped below at
  `min_bandwidth`; Aitchison-Aitken kernel `1 - h` on the datum's category, else
  `h / (L - 1)` with L the number of distinct values *present in that KDE's data* (statsmodels
  counts levels from the data; L = 1 gives inf, as there);
- sampling (model at the largest budget that has one): `num_samples` candidates, each a
  uniformly chosen good datum whose every dimension is kept with probability `1 - bw` and
  otherwise drawn uniformly over its categories (the bandwidth factor widens only continuous
  dimensions, so it has no effect here); score `max(1e-32, g(x)) / max(l(x), 1e-32)` (Python
  `max` NaN semantics), keep the minimum; a non-finite score with a finite l(x) is taken at
  once; if no candidate is taken, or with probability `random_fraction`, or without a model,
  a uniform config.

Reference settings (docs/protocol.md §6, `bench_algos/bohb.py`): eta 3, budgets 1.33/4/12 epochs
(queried at 1/4/12), num_samples 4 (hpbandster's default is 64), random_fraction 0,
bandwidth_factor 3, min_bandwidth 0.3, top_n_percent 15, 40 iterations (the reference stops
after `n_iters=40` brackets whatever the time spent: `n_iterations=40`; None stops at the
runner's time budget instead). `hpo_only=True` searches (lr, bs) for a cell fixed in the
state, with the 3-dimensional space of `bohb_hpo.py` (a one-choice 'cellcode', lr, bs).

On a sub-space (a sub-grid table; `space`) BOHB models and samples only in-space configs, as
hpbandster would with a ConfigSpace of the table's values: the lr and batch-size dimensions
are categoricals over the allowed values only (category = position among them, so their
cardinalities, bandwidths and kernels are those of the smaller categoricals); the 6 edge
dimensions keep 4 ops each. A candidate's (lr, bs) part is drawn as above (it always lies in
the space); its cell part is drawn from hpbandster's per-edge distribution (keep the datum's
op w.p. 1 - bw, else uniform over 4) CONDITIONED on the cell being covered: one categorical
over the covered cells with weights prod_e p_e(c_e) (exact; one uniform). A uniform config is
uniform over the space. With all 4096 cells covered the cell part is hpbandster's as is.

The categorical KDE (`categorical_stats` / `categorical_pdf`) and `model_min_points` live in
`nhb.search.kde`, with hpbandster's generator for mixed continuous / integer / categorical
spaces that `nhb.search.box_bohb` (BOHB for real evaluations) uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from nhb.search import rng, sampling
from nhb.search.base import put
from nhb.search.hyperband import Hyperband
from nhb.search.kde import categorical_pdf as _kde_pdf
from nhb.search.kde import categorical_stats as _kde_stats
from nhb.search.kde import model_min_points
from nhb.space import cells as _cells
from nhb.space import nhb2

JOINT_CARDS = (4, 4, 4, 4, 4, 4, nhb2.NUM_LRS, nhb2.NUM_BS)
HPO_CARDS = (1, nhb2.NUM_LRS, nhb2.NUM_BS)


@struct.dataclass
class BOHBParams:
    """Numeric KDE settings (see the module docstring).

    Attributes:
        random_fraction: probability of a uniform config even with a model.
        min_bandwidth: lower clip of the KDE bandwidths.
        bandwidth_factor: widening of continuous dimensions (no effect on categoricals).
    """

    random_fraction: float = 0.0
    min_bandwidth: float = 0.3
    bandwidth_factor: float = 3.0


@struct.dataclass
class KDEState:
    """Observation buffers per budget.

    Attributes:
        x: int32 [M, max_obs, D] category indices.
        loss: float32 [M, max_obs] losses.
        n: int32 [M] results recorded per budget.
        order: int32 [M, max_obs] slots sorted by loss (ties: earlier first), kept by
            insertion so sampling needs no sort.
        overflow: bool, a result was dropped because a buffer was full.
        fixed_cell: int8 [6] the cell of `hpo_only` searches.
    """

    x: jax.Array
    loss: jax.Array
    n: jax.Array
    order: jax.Array
    overflow: jax.Array
    fixed_cell: jax.Array


@dataclasses.dataclass(frozen=True)
class BOHB(Hyperband):
    """BOHB: Hyperband + hpbandster's KDE config generator (reference settings by default).

    Attributes:
        num_samples: candidates per model-based sample (4 in the paper's scripts).
        top_n_percent: percentage of results that form the good KDE.
        min_points_in_model: None for dim + 1.
        max_obs: observation buffer size per budget (a full buffer sets `overflow`).
        hpo_only: search only (lr, bs) with the state's `fixed_cell`.
    """

    n_iterations: int | None = 40
    num_samples: int = 4
    top_n_percent: int = 15
    min_points_in_model: int | None = None
    max_obs: int = 128
    hpo_only: bool = False
    name = "bohb"
    cheap_steps = False  # the KDE: optimised code (see `nhb.search.runner.compiler_options`)

    @property
    def cards(self) -> tuple[int, ...]:
        """Categories per KDE dimension (the allowed lrs / batch sizes on a sub-space)."""
        sp = self.sp
        hp = (len(sp.lrs), len(sp.bss))
        return (1, *hp) if self.hpo_only else (*JOINT_CARDS[:_cells.NUM_EDGES], *hp)

    @property
    def n_model(self) -> int:
        """Results needed at one budget before a model is built there."""
        dim = len(self.cards)
        mp = max(self.min_points_in_model or dim + 1, dim + 1)
        return model_min_points(dim, mp, self.top_n_percent)

    def default_params(self) -> BOHBParams:
        """random_fraction 0, min_bandwidth 0.3, bandwidth_factor 3."""
        return BOHBParams()

    def encode(self, cfg: nhb2.Config) -> jax.Array:
        """Category indices [D] of a config (lr / bs: position among the allowed values)."""
        sp = self.sp
        lr, bs = cfg.lr, cfg.bs
        if not sp.full_hps:
            lr, bs = jnp.asarray(sp.lr_slot)[lr], jnp.asarray(sp.bs_slot)[bs]
        hp = jnp.stack([lr, bs]).astype(jnp.int32)
        if self.hpo_only:
            return jnp.concatenate([jnp.zeros(1, jnp.int32), hp])
        return jnp.concatenate([cfg.cell.astype(jnp.int32), hp])

    def decode(self, v: jax.Array, sampler: KDEState) -> nhb2.Config:
        """The config of category indices [D]."""
        sp = self.sp
        lr, bs = v[-2], v[-1]
        if not sp.full_hps:
            lr, bs = jnp.asarray(sp.lrs)[lr], jnp.asarray(sp.bss)[bs]
        if self.hpo_only:
            return nhb2.make(sampler.fixed_cell, lr, bs)
        return nhb2.make(v[:_cells.NUM_EDGES], lr, bs)

    def sampler_init(self, key: jax.Array, params: BOHBParams) -> KDEState:
        """Empty buffers (fixed cell all-conv until set by the caller)."""
        del key, params
        m, d = len(self.sched["budgets"]), len(self.cards)
        return KDEState(x=jnp.zeros((m, self.max_obs, d), jnp.int32),
                        loss=jnp.full((m, self.max_obs), jnp.inf, jnp.float32),
                        n=jnp.zeros(m, jnp.int32),
                        order=jnp.broadcast_to(jnp.arange(self.max_obs, dtype=jnp.int32),
                                               (m, self.max_obs)),
                        overflow=jnp.bool_(False),
                        fixed_cell=jnp.zeros(_cells.NUM_EDGES, jnp.int8))

    def observe(self, sampler: KDEState, cfg: nhb2.Config, loss: jax.Array,
                budget_index: jax.Array, params: BOHBParams) -> KDEState:
        """Records the result unless a model exists at a larger budget."""
        del params
        m = sampler.n.shape[0]
        larger = (jnp.arange(m) > budget_index) & (sampler.n >= self.n_model)
        record = ~jnp.any(larger)
        n_b = sampler.n[budget_index]
        room = n_b < self.max_obs
        write = record & room
        i = jnp.minimum(n_b, self.max_obs - 1)
        x = put(sampler.x, budget_index, put(sampler.x[budget_index], i, self.encode(cfg)),
                write)
        old = sampler.loss[budget_index]
        lo = put(sampler.loss, budget_index, put(old, i, loss), write)
        # insert slot n_b into the sorted order after every earlier loss <= this one
        slot = jnp.arange(self.max_obs)
        r = jnp.sum((slot < n_b) & (old <= loss))
        order = sampler.order[budget_index]
        shifted = jnp.where(slot < r, order, jnp.where(slot == r, n_b, jnp.roll(order, 1)))
        order = put(sampler.order, budget_index, shifted, write)
        n = sampler.n + ((jnp.arange(m) == budget_index) & write).astype(jnp.int32)
        return sampler.replace(x=x, loss=lo, n=n,
                               order=order, overflow=sampler.overflow | (record & ~room))

    def propose(self, key: jax.Array, sampler: KDEState, params: BOHBParams) -> nhb2.Config:
        """A model-based config from the largest budget with a model, else uniform."""
        cards = self.cards
        dim, k = len(cards), self.num_samples
        u = rng.uniforms(key, 1 + dim + k + 2 * k * dim)
        u_frac, u_rand, u_pick = u[0], u[1:1 + dim], u[1 + dim:1 + dim + k]
        u_keep = u[1 + dim + k:1 + dim + k + k * dim].reshape(k, dim)
        u_cat = u[1 + dim + k + k * dim:].reshape(k, dim)
        card = jnp.asarray(cards, jnp.int32)
        uniform = rng.randint(u_rand, card)
        has = sampler.n >= self.n_model
        b = jnp.max(jnp.where(has, jnp.arange(has.shape[0]), 0))
        x, n = sampler.x[b][sampler.order[b]], sampler.n[b]  # rows sorted by loss
        rank = jnp.arange(self.max_obs)
        mp = max(self.min_points_in_model or dim + 1, dim + 1)
        n_good = jnp.maximum(mp, (self.top_n_percent * n) // 100)
        n_bad = jnp.maximum(mp, ((100 - self.top_n_percent) * n) // 100)
        good_n = jnp.minimum(n_good, n)
        bad_n = jnp.clip(n - n_good, 0, n_bad)
        good = rank < good_n
        bad = (rank >= n_good) & (rank < n_good + bad_n)
        bw_g, lv_g = _kde_stats(x, good, good_n, cards, params.min_bandwidth)
        bw_b, lv_b = _kde_stats(x, bad, bad_n, cards, params.min_bandwidth)
        # candidates: a uniformly chosen good datum, each dim kept w.p. 1 - bw
        pick = rng.randint(u_pick, jnp.maximum(good_n, 1))
        datum = x[pick]  # the pick-th best result
        keep = u_keep < (1.0 - bw_g)
        cand = jnp.where(keep, datum, rng.randint(u_cat, card))
        if not self.hpo_only and not self.sp.all_cells:  # cells conditioned on coverage
            uniform, cand = self._covered_cells(uniform, cand, datum, bw_g, u_rand, u_cat)
        lx = _kde_pdf(cand, x, good, good_n, bw_g, lv_g)
        gx = _kde_pdf(cand, x, bad, bad_n, bw_b, lv_b)
        tiny = jnp.float32(1e-32)
        val = jnp.where(gx > tiny, gx, tiny) / jnp.where(tiny > lx, tiny, lx)
        chosen, best, stopped = jnp.int32(-1), jnp.float32(jnp.inf), jnp.bool_(False)
        for j in range(k):  # the reference's sequential loop with its early break
            take_now = ~stopped & ~jnp.isfinite(val[j]) & jnp.isfinite(lx[j])
            improve = ~stopped & ~take_now & (val[j] < best)
            chosen = jnp.where(take_now | improve, j, chosen)
            best = jnp.where(improve, val[j], best)
            stopped = stopped | take_now
        use_model = jnp.any(has) & (u_frac >= params.random_fraction) & (
            chosen >= 0)
        v = jnp.where(use_model, cand[jnp.maximum(chosen, 0)], uniform)
        return self.decode(v, sampler)

    def _covered_cells(self, uniform: jax.Array, cand: jax.Array, datum: jax.Array,
                       bw: jax.Array, u_rand: jax.Array,
                       u_cat: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Replaces the cell dims of the uniform config and of the candidates [K, D] by draws
        over the covered cells: uniform, resp. hpbandster's per-edge law given coverage."""
        e = _cells.NUM_EDGES
        digits = jnp.asarray(sampling.cell_digits(self.sp), jnp.int32)  # [C, 6]
        uniform = uniform.at[:e].set(digits[rng.randint(u_rand[0], digits.shape[0])])
        keep = jnp.clip(1.0 - bw[:e], 0.0, 1.0)  # P(keep the datum's op) per edge
        same = digits[None] == datum[:, None, :e]  # [K, C, 6]
        p = jnp.where(same, keep, 0.0) + (1.0 - keep) / _cells.NUM_OPS
        logw = jnp.sum(jnp.log(p), -1)  # [K, C]
        k = jax.vmap(rng.categorical)(u_cat[:, 0], logw)
        return uniform, cand.at[:, :e].set(digits[k])

    def overflowed(self, state: Any) -> jax.Array:
        """Whether an observation was dropped (buffer `max_obs` too small)."""
        return state.sampler.overflow
