"""Multi-objective BO for NAGO (issue 14): USeMO acquisition, batches by hard local penalisation.

Reference facts: `reference/nago.md` §4 ("MOBO", "Acquisition (USeMO)", "Batch by hard local
penalisation"), DESIGN.md §4. All objectives are MINIMISED; inputs are points of [0,1]^d.
The surrogate is a pure JAX function `posterior(x [n, d]) -> (mean [n, m], std [n, m])`
(one BNN per objective), differentiable in x.

USeMO (belakaria/USeMO @ ba0fb12, main.py:71-97, acquisitions.py:13-41), per iteration t:

1. per objective i an acquisition, minimised: EI (default) -std (z Phi(z) + phi(z)) with
   z = (min_obs_i - 1e-3 - mean) / std; "ucb" mean + beta std; "lcb" mean - beta std
   (USeMO's names and signs: its UCB minimised is the pessimistic bound);
   beta_t = sqrt(0.5 * 2 log(t^(d/2+2) pi^2 / (3 * 0.05))) (`beta_t`);
2. the Pareto set of the m acquisitions over the box. USeMO runs NSGA-II (platypus, 2500
   evaluations); here `pareto_search`, a jittable vectorised archive search (DESIGN allows it
   if tested on a known front: tests/mobo_test.py checks ZDT1 and two spheres in 8-D). The
   archive starts as `archive_size` uniform points; round 0 adds the observed points and
   `n_candidates` new ones, each further round (`n_rounds` in all) `n_candidates` new ones: a
   `uniform_fraction` uniform, the rest children of the observed points (round 0) or of the
   archive's non-dominated points (binary tournament on crowding distance; blend crossover
   for half; Gaussian noise of std perturb_scale * perturb_decay^r on all coordinates or on
   one; clipped to the box). The archive keeps the `archive_size` best by (number of points
   dominating it, then crowding distance among the non-dominated), exact repeats last; the
   result is its final non-dominated set. Defaults: 256 + N + 16 x 512 evaluations;
3. among the front points not equal (L-inf distance <= `dup_tol`) to an evaluated x, the one
   with the largest uncertainty volume prod_i 2 beta sigma_i(x) (scipy Rectangle(UB, LB)).

Batch of B (NAGO: 8) by hard local penalisation (Alvi, Ru et al. 2019; see
`nhb.search.penalisation`): the first point is the unpenalised choice of step 3; each later
point maximises the penalised score over the same candidates (the surrogate is not updated
within a batch, so the front does not change). L_i is estimated once per batch.

ASSUMPTION (unpublished in NAGO): how HLP applies to the two-objective uncertainty metric.
Each objective i gets its own cone (mu_i, sigma_i, M_i = best observed value of objective i,
L_i = Lipschitz constant of mu_i) and its factor phi_i(x) = softmin(prod_j h_ij(x), 1)
multiplies that objective's side of the box: score(x) = prod_i 2 beta sigma_i(x) phi_i(x),
i.e. the uncertainty volume times prod_i phi_i(x), maximised over the not-yet-chosen,
not-evaluated front candidates. Should fewer than B such front points exist, the remaining
picks come (by the same penalised score) from the other archive points (`info["from_front"]`).
Failed evaluations (NaN rows of y_obs) are ignored for the best values but count as
evaluated points. A non-finite acquisition value is never on the front.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm
from jax.tree_util import Partial

from nhb.search import penalisation as pen
from nhb.search import rng

ACQUISITIONS = ("ei", "ucb", "lcb")
EI_XI = 1e-3  # acquisitions.py: xi = 1e-3
STD_FLOOR = 1e-12  # EI only: z stays finite at a zero predictive std
OBS_BUCKET = 64  # observed points are padded to a multiple of this (fewer recompilations)


@dataclasses.dataclass(frozen=True)
class MOBOConfig:
    """Settings of `propose_batch`.

    Attributes:
        batch_size: points per batch (NAGO: 8).
        acquisition: per-objective acquisition, one of ACQUISITIONS (USeMO default "ei").
        n_candidates: new candidates per search round; archive_size: archive of the search.
        n_rounds: search rounds; uniform_fraction: share of new candidates drawn uniformly.
        perturb_scale: std of the round-0 Gaussian perturbations; perturb_decay: its factor per
            round.
        lipschitz_restarts, lipschitz_steps, lipschitz_lr, lipschitz_samples: the multi-start
            ascent of ||grad mu|| (`nhb.search.penalisation.lipschitz_constants`).
        softmin_p: the HLP soft-min exponent (reference -5).
        dup_tol: L-inf distance below which a candidate equals an evaluated or chosen point.
    """

    batch_size: int = 8
    acquisition: str = "ei"
    n_candidates: int = 512
    archive_size: int = 256
    n_rounds: int = 16
    uniform_fraction: float = 0.1
    perturb_scale: float = 0.2
    perturb_decay: float = 0.8
    lipschitz_restarts: int = 10
    lipschitz_steps: int = 200
    lipschitz_lr: float = 0.05
    lipschitz_samples: int = 1000
    softmin_p: float = pen.SOFTMIN_P
    dup_tol: float = 1e-6

    def __post_init__(self) -> None:
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition {self.acquisition!r} is invalid; valid choices: "
                             f"{list(ACQUISITIONS)}")
        for name in ("batch_size", "n_candidates", "archive_size", "n_rounds",
                     "lipschitz_restarts", "lipschitz_steps", "lipschitz_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.batch_size > self.archive_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds archive_size "
                             f"{self.archive_size} (the candidates a batch is picked from)")
        if not 0.0 <= self.uniform_fraction <= 1.0:
            raise ValueError(f"uniform_fraction must lie in [0, 1], got {self.uniform_fraction}")
        if self.softmin_p >= 0:
            raise ValueError(f"softmin_p must be negative, got {self.softmin_p}")


def beta_t(t: jax.Array | int, d: int) -> jax.Array:
    """USeMO's compute_beta: sqrt(0.5 * 2 log(t^(d/2+2) pi^2 / (3 * 0.05))).

    Args:
        t: iteration number (USeMO passes l + 1, so 1 first); d: input dimension.

    Returns:
        float scalar.
    """
    t = jnp.asarray(t, jnp.float32)
    tau = 2.0 * ((d / 2 + 2) * jnp.log(t) + math.log(math.pi ** 2 / (3 * 0.05)))
    return jnp.sqrt(0.5 * tau)


def acquisition(mean: jax.Array, std: jax.Array, best: jax.Array, beta: jax.Array,
                name: str = "ei") -> jax.Array:
    """USeMO's per-objective acquisitions, all to be minimised.

    Args:
        mean, std: float [n, m] posterior; best: float [m] smallest observed value per
            objective (EI only); beta: scalar (UCB/LCB only); name: one of ACQUISITIONS.

    Returns:
        float [n, m].
    """
    if name == "ei":
        s = jnp.maximum(std, STD_FLOOR)
        z = (best - EI_XI - mean) / s
        return -(s * (z * norm.cdf(z) + norm.pdf(z)))
    if name == "ucb":
        return mean + beta * std
    if name == "lcb":
        return mean - beta * std
    raise ValueError(f"acquisition {name!r} is invalid; valid choices: {list(ACQUISITIONS)}")


def dominated_by(f: jax.Array) -> jax.Array:
    """How many points dominate each point (minimisation; NaN rows dominate nothing).

    Args:
        f: float [n, m].

    Returns:
        int32 [n].
    """
    le = jnp.all(f[:, None, :] <= f[None, :, :], axis=-1)
    lt = jnp.any(f[:, None, :] < f[None, :, :], axis=-1)
    return jnp.sum(le & lt, axis=0, dtype=jnp.int32)


def non_dominated(f: jax.Array) -> jax.Array:
    """Bool mask of the points no other point dominates (all objectives minimised).

    The m-objective jnp generalisation of `nhb.search.selection.pareto_front` (a 2-objective
    numpy sort; left as is) with the same rules: a point dominates another when it is <= in
    every objective and < in one; equal points are all kept; a point with a NaN is never on
    the front and dominates nothing. O(n^2 m) memory.

    Args:
        f: float [n, m].

    Returns:
        bool [n].
    """
    f = jnp.asarray(f)
    return (dominated_by(f) == 0) & ~jnp.any(jnp.isnan(f), axis=-1)


def crowding_distance(f: jax.Array, mask: jax.Array) -> jax.Array:
    """NSGA-II crowding distance within the masked points (inf at each objective's extremes).

    Args:
        f: float [n, m]; mask: bool [n] the set (e.g. a front).

    Returns:
        float [n], 0 outside the mask.
    """
    n = f.shape[0]
    key = jnp.where(mask[:, None], f, jnp.inf)
    order = jnp.argsort(key, axis=0)
    srt = jnp.take_along_axis(key, order, axis=0)
    k = jnp.sum(mask)
    pos = jnp.arange(n)[:, None]
    span = srt[jnp.maximum(k - 1, 0)] - srt[0]
    prev = jnp.concatenate([srt[:1], srt[:-1]])
    nxt = jnp.concatenate([srt[1:], srt[-1:]])
    inner = (nxt - prev) / jnp.where(span > 0, span, 1.0)
    contrib = jnp.where((pos == 0) | (pos == k - 1), jnp.inf, inner)
    contrib = jnp.where(pos < k, contrib, 0.0)
    dist = jnp.zeros(n, key.dtype).at[order.reshape(-1)].add(contrib.reshape(-1))
    return jnp.where(mask, dist, 0.0)


def _select(key: jax.Array, x: jax.Array, f: jax.Array, size: int
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The `size` best points by (domination count, crowding among the front).

    Points with a non-finite value and repeats of an earlier row of x (clipping to the box
    makes exact copies) rank last and are never on the front.
    """
    n = x.shape[0]
    same = jnp.all(x[:, None, :] == x[None, :, :], axis=-1)
    repeat = jnp.any(same & (jnp.arange(n)[:, None] < jnp.arange(n)[None, :]), axis=0)
    f = jnp.where(repeat[:, None], jnp.nan, f)
    bad = jnp.any(jnp.isnan(f), axis=-1)
    count = dominated_by(f)
    front = (count == 0) & ~bad
    rank = jnp.where(bad, n + 1, count)
    tie = jnp.where(front, -crowding_distance(f, front), -_uniform(key, count.shape))
    keep = jnp.lexsort((tie, rank))[:size]
    return x[keep], f[keep], front[keep]


def _uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniforms in [0, 1) from `nhb.search.rng` (cheap to compile, unlike threefry)."""
    return rng.uniforms(key, math.prod(shape)).reshape(shape)


def _children(key: jax.Array, parents: jax.Array, fitness: jax.Array, weights: jax.Array,
              n: int, n_uniform: int, scale: jax.Array | float) -> jax.Array:
    """n new points: n_uniform uniform, the rest children of the weighted parents, clipped.

    Parents are drawn by binary tournament on `fitness` among the rows with `weights` True
    (all rows if none is). Half of the children are a blend crossover p1 + u (p2 - p1) with
    u ~ U(-0.25, 1.25), one u per child for half of those (staying on the line through the
    parents), one per coordinate for the others; the rest are copies of p1. Then N(0, scale^2)
    noise on every coordinate (half of the children) or on one random coordinate.
    """
    d = parents.shape[1]
    c = n - n_uniform
    u = _uniform(key, (n_uniform * d + c * (5 + 3 * d),))
    fresh = u[:n_uniform * d].reshape(n_uniform, d)
    v = u[n_uniform * d:].reshape(c, 5 + 3 * d)
    w = jnp.where(jnp.any(weights), weights, True).astype(jnp.float32)
    cdf = jnp.cumsum(w)
    draw = jnp.minimum(jnp.searchsorted(cdf, v[:, :4] * cdf[-1], side="right"), len(w) - 1)
    win = jnp.where(fitness[draw[:, 0::2]] >= fitness[draw[:, 1::2]], draw[:, 0::2],
                    draw[:, 1::2])
    p1, p2 = parents[win[:, 0]], parents[win[:, 1]]
    row = jnp.arange(c)[:, None]
    blend = -0.25 + 1.5 * v[:, 4:4 + d]
    blend = jnp.where(row % 4 == 0, blend[:, :1], blend)
    blend = jnp.where(row % 4 < 2, blend, 0.0)
    gauss = (jnp.sqrt(-2.0 * jnp.log1p(-v[:, 4 + d:4 + 2 * d]))
             * jnp.cos(2.0 * jnp.pi * v[:, 4 + 2 * d:4 + 3 * d]))
    one = jnp.arange(d)[None, :] == rng.randint(v[:, -1], d)[:, None]
    noisy = one | (row % 2 == 0)
    moved = p1 + blend * (p2 - p1) + jnp.where(noisy, scale * gauss, 0.0)
    return jnp.clip(jnp.concatenate([fresh, moved]), 0.0, 1.0)


def _finite_rows(f: jax.Array) -> jax.Array:
    return jnp.where(jnp.all(jnp.isfinite(f), axis=-1, keepdims=True), f, jnp.nan)


def pareto_search(key: jax.Array, fn: Any, x_seed: jax.Array, config: MOBOConfig
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Vectorised search for the Pareto set of fn over [0,1]^d (the module docstring, step 2).

    Args:
        key: PRNG key.
        fn: x [n, d] -> f [n, m], minimised; non-finite rows are never on the front.
        x_seed: float [S, d] starting points (observed points; NaN rows are ignored).
        config: search sizes (n_candidates, archive_size, n_rounds, uniform_fraction,
            perturb_scale, perturb_decay).

    Returns:
        (x [A, d], f [A, m], front bool [A]) with A = archive_size.
    """
    d = x_seed.shape[1]
    n_new, size = config.n_candidates, config.archive_size
    n_uni = round(config.uniform_fraction * n_new)
    seed_ok = jnp.all(jnp.isfinite(x_seed), axis=-1)
    x = jnp.concatenate([
        _uniform(rng.step_key(key, 0), (size, d)), x_seed,
        _children(rng.step_key(key, 1), jnp.where(seed_ok[:, None], x_seed, 0.5),
                  jnp.zeros(len(x_seed)), seed_ok, n_new, n_uni, config.perturb_scale)])
    x, f, front = _select(rng.step_key(key, 2), x, _finite_rows(fn(x)), size)

    def round_(r, carry):
        x, f, front = carry
        scale = config.perturb_scale * config.perturb_decay ** r.astype(jnp.float32)
        new = _children(rng.step_key(key, 2 * r + 1), x, crowding_distance(f, front), front,
                        n_new, n_uni, scale)
        xs = jnp.concatenate([x, new])
        return _select(rng.step_key(key, 2 * r + 2), xs,
                       jnp.concatenate([f, _finite_rows(fn(new))]), size)

    return jax.lax.fori_loop(1, config.n_rounds, round_, (x, f, front))


def _near_any(x: jax.Array, others: jax.Array, valid: jax.Array, tol: float) -> jax.Array:
    """Bool [n]: x within L-inf distance tol of some valid row of others.

    Rows are masked explicitly: XLA:CPU's fast min/max need not propagate NaN.
    """
    gap = jnp.max(jnp.abs(x[:, None, :] - others[None, :, :]), axis=-1)
    return jnp.any((gap <= tol) & valid[None, :], axis=-1)


def _propose(key: jax.Array, posterior: Partial, x_obs: jax.Array, y_obs: jax.Array,
             t: jax.Array, config: MOBOConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    d = x_obs.shape[1]
    k_search, k_lip = rng.step_key(key, 0), rng.step_key(key, 1)
    best = jnp.nanmin(jnp.where(jnp.isfinite(y_obs), y_obs, jnp.nan), axis=0)
    beta = beta_t(t, d)

    def acq_fn(x: jax.Array) -> jax.Array:
        mean, std = posterior(x)
        return acquisition(mean, std, best, beta, config.acquisition)

    xc, fc, front = pareto_search(k_search, acq_fn, x_obs, config)
    mean, std = posterior(xc)
    volume = jnp.prod(2.0 * beta * std, axis=-1)
    obs_ok = jnp.all(jnp.isfinite(x_obs), axis=-1)
    fresh = ~_near_any(xc, x_obs, obs_ok, config.dup_tol)
    usable = fresh & jnp.all(jnp.isfinite(xc), axis=-1)
    lip, _ = pen.lipschitz_constants(k_lip, posterior, d, config.lipschitz_restarts,
                                     config.lipschitz_steps, config.lipschitz_lr,
                                     config.lipschitz_samples)
    b = config.batch_size

    def pick(k, carry):
        idx, score = carry
        valid = jnp.arange(b) < k
        xb = xc[idx]
        radius = pen.cone_radii(mean[idx], std[idx], best, lip)
        phi = pen.hlp_penaliser(xc, xb, radius, valid, config.softmin_p)
        s = volume * jnp.prod(phi, axis=-1)
        # NaN -> lowest; any eligible point beats every ineligible one (-inf)
        s = jnp.maximum(jnp.where(jnp.isnan(s), -jnp.inf, s), -jnp.finfo(s.dtype).max)
        taken = _near_any(xc, xb, valid, config.dup_tol)
        ok = usable & ~taken
        on = ok & front
        choice = jnp.where(jnp.any(on), jnp.argmax(jnp.where(on, s, -jnp.inf)),
                           jnp.argmax(jnp.where(ok, s, -jnp.inf)))
        return idx.at[k].set(choice), score.at[k].set(s[choice])

    idx, score = jax.lax.fori_loop(
        0, b, pick, (jnp.zeros(b, jnp.int32), jnp.zeros(b, volume.dtype)))
    info = {"candidates": xc, "acquisitions": fc, "front": front, "fresh": fresh,
            "volume": volume, "mean": mean, "std": std, "indices": idx, "scores": score,
            "from_front": front[idx], "lipschitz": lip, "best": best, "beta": beta,
            "n_front": jnp.sum(front)}
    return xc[idx], info


_propose_jit = jax.jit(_propose, static_argnames=("config",))


def propose_batch(key: jax.Array, posterior: Any, x_obs: Any, y_obs: Any, t: int,
                  config: MOBOConfig = MOBOConfig()) -> tuple[jax.Array, dict[str, Any]]:
    """The next batch of `config.batch_size` points (USeMO + hard local penalisation).

    Runs as one jitted program (Lipschitz ascent included). A plain function `posterior` is a
    static argument (a new closure per BO iteration recompiles); pass
    `jax.tree_util.Partial(apply, params)` to reuse the compiled program across iterations.
    Observed points are padded with NaN rows to a multiple of 64 for the same reason.

    Args:
        key: PRNG key.
        posterior: x [n, d] -> (mean [n, m], std [n, m]), pure JAX, differentiable in x.
        x_obs: float [N, d] evaluated points in [0,1]^d.
        y_obs: float [N, m] their objective values (NaN rows: failed evaluations).
        t: BO iteration number, from 1 (USeMO's beta_t).
        config: settings.

    Returns:
        (x_batch float [B, d], info dict: candidates [A, d], acquisitions [A, m], front [A],
        fresh [A] (not an evaluated point), volume [A], mean/std [A, m], indices [B] into
        candidates, scores [B] (penalised score when picked), from_front [B], lipschitz [m],
        best [m], beta, n_front).
    """
    x_obs = np.asarray(x_obs, np.float32)
    y_obs = np.asarray(y_obs, np.float32)
    if x_obs.ndim != 2 or y_obs.ndim != 2 or len(x_obs) != len(y_obs) or len(x_obs) == 0:
        raise ValueError(f"x_obs [N, d] and y_obs [N, m] with N >= 1 needed, got shapes "
                         f"{x_obs.shape} and {y_obs.shape}")
    if not np.all(np.isfinite(y_obs), axis=1).any():
        raise ValueError("y_obs has no finite row: no best value for EI / the HLP cones")
    if int(t) < 1:
        raise ValueError(f"t counts from 1, got {t}")
    pad = -len(x_obs) % OBS_BUCKET
    x_obs = np.concatenate([x_obs, np.full((pad, x_obs.shape[1]), np.nan, np.float32)])
    y_obs = np.concatenate([y_obs, np.full((pad, y_obs.shape[1]), np.nan, np.float32)])
    if not isinstance(posterior, Partial):
        posterior = Partial(posterior)
    return _propose_jit(key, posterior, jnp.asarray(x_obs), jnp.asarray(y_obs),
                        jnp.asarray(t, jnp.int32), config)
