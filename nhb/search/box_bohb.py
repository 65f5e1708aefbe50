"""BOHB (hpbandster) over a box of unit vectors, for real evaluations, one stage per `ask`.

NAGO (issue 14) searches generator hyperparameter vectors (ints and floats) with HpBandSter's
BOHB: eta 2, budgets 30/60/120 epochs, the generator defaults of `nhb.search.kde`. A config is
a ConfigSpace-style vector: a float in [0, 1] per float or integer hyperparameter (an integer
in [lo, hi] is a float on [lo - 0.49999, hi + 0.49999], normalised; its value is the rounded
transform), a category index per categorical (`cards[j]` = 0, resp. its number of choices).

Schedule (hpbandster `BOHB` + `SuccessiveHalving`, via `nhb.search.hyperband.schedule`):
iteration i runs bracket `s = M - 1 - i % M` with `ns[s]` configs per stage at budgets
`budgets[M-1-s:]`; with eta 2 and budgets 1/2/4 (or 30/60/120) the brackets cycle [4, 2, 1],
[2, 1], [3]. `ask` returns a whole stage (evaluate its configs in parallel, each from scratch
at the stage's budget): first the configs promoted from the previous stage (creation order),
then new configs, one `get_config` each from the model state at the start of the stage.
`tell` takes the stage's losses (`100 - valid acc`; NaN / inf = a failed evaluation -> loss
inf, as hpbandster's crashed jobs), then:

- records every result at budget b unless a model exists at a larger budget (hpbandster
  `new_result`: "skip model building if we already have a bigger model"); a model exists at b
  once its results allow one (`kde.KDESettings.n_model`: dim + 1 minimum points and more rows
  than dimensions in both the good and the bad KDE) and is refit on all results recorded at b;
- promotes the `ns[s, k+1]` best finite losses (ties: creation order), keeping creation
  order; failed configs never advance and the missing slots are filled with new configs at
  the next stage (hpbandster's `add_configuration` for unfilled slots), so failures never
  stall the schedule;
- new configs come from the largest budget with a model (`kde.propose`), else uniform; the
  caller's `canonicalize` (unit vector -> unit vector after int rounding, ConfigSpace's
  `Configuration(vector=v).get_array()` of the value) is applied to every new config before it
  is returned and recorded (scores are computed on the raw candidates, as hpbandster).

The state is a `flax.struct.dataclass` (arrays + static cards / config). Save it with
`flax.serialization.to_bytes(state)` and resume with
`flax.serialization.from_bytes(init(key, cards, config), blob)` (the same cards and config),
also between `ask` and `tell`: the pending stage is part of the state. `_propose_batch` (the
KDE fits, candidate sampling, scoring and selection for all new configs of a stage) is jitted,
compiled once per (cards, integer settings, buffer shape; the float settings are traced, the
buffer is rounded up to 16 rows); the stage bookkeeping in `ask` / `tell` is host NumPy.

Deviations from hpbandster: a stage's new configs are all drawn from the model as it stands
when the stage starts (hpbandster with one worker refits between draws; with >= stage-size
workers it does as here); the next stage starts only when the whole stage is told (no
asynchronous overlap of iterations); ties in losses are broken by creation / recording order
(numpy's default quicksort is stable only up to 16 entries); the truncated normal is drawn by
CDF inversion; float32 instead of float64 (densities in log space, see `nhb.search.kde`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nhb.search import kde
from nhb.search.hyperband import schedule


@dataclasses.dataclass(frozen=True)
class BoxBOHBConfig:
    """BOHB settings (HpBandSter's defaults except the budgets; eta 2 as NAGO).

    Attributes:
        min_budget: smallest budget (epochs).
        max_budget: largest budget (epochs).
        n_iterations: brackets to run (hpbandster's `run(n_iterations)`).
        eta: halving rate.
        min_points_in_model: None for dim + 1.
        top_n_percent: percentage of results in the good KDE.
        num_samples: candidates per model-based config.
        random_fraction: probability of a uniform config even with a model.
        bandwidth_factor: widening of continuous bandwidths for candidates.
        min_bandwidth: lower clip of the bandwidths.
        canonicalize: unit vector [D] -> unit vector [D] after int rounding (None: identity).
    """

    min_budget: float = 30.0
    max_budget: float = 120.0
    n_iterations: int = 50
    eta: float = 2.0
    min_points_in_model: int | None = None
    top_n_percent: int = 15
    num_samples: int = 64
    random_fraction: float = 1 / 3
    bandwidth_factor: float = 3.0
    min_bandwidth: float = 1e-3
    canonicalize: Callable[[Any], Any] | None = None

    @property
    def sched(self) -> dict[str, np.ndarray]:
        """hpbandster's schedule (`budgets` [M], `epochs` [M], `ns` [M, M])."""
        return schedule(self.eta, self.min_budget, self.max_budget)

    @property
    def kde_settings(self) -> kde.KDESettings:
        """The config generator's settings."""
        return kde.KDESettings(self.num_samples, self.top_n_percent, self.min_points_in_model,
                               self.random_fraction, self.bandwidth_factor, self.min_bandwidth)

    def budget_counts(self) -> np.ndarray:
        """Evaluations per budget over all iterations (an upper bound on recorded results)."""
        ns = self.sched["ns"]
        m = ns.shape[0]
        counts = np.zeros(m, np.int64)
        for i in range(self.n_iterations):
            s = m - 1 - i % m
            counts[m - 1 - s:] += ns[s, :s + 1]
        return counts


@struct.dataclass
class BoxState:
    """BOHB state.

    Attributes:
        obs_x: float32 [M, max_obs, D] recorded configs per budget (recording order).
        obs_loss: float32 [M, max_obs] their losses (inf: failed or empty).
        obs_n: int32 [M] results recorded per budget.
        iteration: int32 brackets completed.
        stage: int32 stage within the bracket.
        x: float32 [max_n, D] the stage's configs (creation order); before `ask`, the first
            `n_prom` are the configs promoted into the stage.
        n_prom: int32 promoted configs at the head of `x`.
        pending: bool, the stage was asked and awaits `tell`.
        n_stage: int32 configs in the pending stage.
        model_based: bool [max_n] which of the stage's configs were model-based picks.
        n_evals: int32 evaluations told so far.
        inc_x: float32 [D] incumbent: best finite loss at the largest budget with one.
        inc_loss: float32 its loss (inf: none yet).
        inc_budget: int32 its budget index (-1: none).
        cards: static, 0 per continuous / integer dim, choices per categorical.
        config: static `BoxBOHBConfig`.
    """

    obs_x: jax.Array
    obs_loss: jax.Array
    obs_n: jax.Array
    iteration: jax.Array
    stage: jax.Array
    x: jax.Array
    n_prom: jax.Array
    pending: jax.Array
    n_stage: jax.Array
    model_based: jax.Array
    n_evals: jax.Array
    inc_x: jax.Array
    inc_loss: jax.Array
    inc_budget: jax.Array
    cards: tuple[int, ...] = struct.field(pytree_node=False)
    config: BoxBOHBConfig = struct.field(pytree_node=False)


def init(key: jax.Array, cards: tuple[int, ...], config: BoxBOHBConfig) -> BoxState:
    """Empty buffers, bracket 0 stage 0.

    Args:
        key: unused (evosax-style signature; randomness comes with `ask`).
        cards: 0 per continuous / integer dim, number of choices per categorical dim.
        config: the settings.

    Returns:
        The initial state.
    """
    del key
    cards = tuple(int(c) for c in cards)
    sched = config.sched
    m, d = len(sched["budgets"]), len(cards)
    max_n = int(sched["ns"].max())
    max_obs = -(-max(int(config.budget_counts().max()), 1) // 16) * 16  # shared compiles
    i32 = lambda v: jnp.asarray(v, jnp.int32)
    return BoxState(
        obs_x=jnp.zeros((m, max_obs, d), jnp.float32),
        obs_loss=jnp.full((m, max_obs), jnp.inf, jnp.float32), obs_n=jnp.zeros(m, jnp.int32),
        iteration=i32(0), stage=i32(0), x=jnp.zeros((max_n, d), jnp.float32), n_prom=i32(0),
        pending=jnp.asarray(False), n_stage=i32(0), model_based=jnp.zeros(max_n, bool),
        n_evals=i32(0), inc_x=jnp.zeros(d, jnp.float32), inc_loss=jnp.asarray(jnp.inf,
                                                                               jnp.float32),
        inc_budget=i32(-1), cards=cards, config=config)


def done(state: BoxState) -> bool:
    """True once `n_iterations` brackets are complete."""
    return int(state.iteration) >= state.config.n_iterations


def bracket(state: BoxState) -> int:
    """The current bracket s (stages at budgets `budgets[M-1-s:]`)."""
    m = len(state.config.sched["budgets"])
    return m - 1 - int(state.iteration) % m


def budget_index(state: BoxState) -> int:
    """Index into the budgets of the current stage."""
    m = len(state.config.sched["budgets"])
    return m - 1 - bracket(state) + int(state.stage)


def stage_info(state: BoxState) -> dict[str, Any]:
    """The current (or pending) stage: iteration, bracket, stage, budget, epochs, sizes, and
    which configs were promoted / model-based (valid after `ask`)."""
    sched = state.config.sched
    s, k, b = bracket(state), int(state.stage), budget_index(state)
    n = int(sched["ns"][s, k])
    n_prom = int(state.n_prom)
    return dict(iteration=int(state.iteration), bracket=s, stage=k, budget_index=b,
                budget=float(sched["budgets"][b]), epochs=int(sched["epochs"][b]), n=n,
                promoted=np.arange(n) < n_prom,
                model_based=np.asarray(state.model_based[:n]))


def int_value(v: Any, lo: int, hi: int) -> Any:
    """ConfigSpace 0.4's value of an integer in [lo, hi] at unit vector value(s) v."""
    return np.round(lo - 0.49999 + np.asarray(v, np.float64) * (hi - lo + 0.99998)).astype(int)


def int_canonicalizer(bounds: Sequence[tuple[int, int] | None]) -> Callable[[Any], np.ndarray]:
    """`canonicalize` for integer dims [lo, hi] (None: float / categorical dims, unchanged):
    vector -> int value -> vector, as `Configuration(vector=v).get_array()` of its value."""
    ints = [(j, lo, hi) for j, b in enumerate(bounds) if b is not None for lo, hi in [b]]

    def canonicalize(v: Any) -> np.ndarray:
        out = np.array(v, np.float64)
        for j, lo, hi in ints:
            out[j] = (int_value(out[j], lo, hi) - lo + 0.49999) / (hi - lo + 0.99998)
        return out.astype(np.float32)

    return canonicalize


@functools.partial(jax.jit, static_argnames=("cards", "settings", "n"))
def _propose_batch(key: jax.Array, obs_x: jax.Array, obs_loss: jax.Array, obs_n: jax.Array,
                   floats: jax.Array, cards: tuple[int, ...], settings: kde.KDESettings,
                   n: int) -> tuple[jax.Array, jax.Array]:
    """n new configs [n, D] (raw, before canonicalisation) and model-based flags [n].

    `floats` = (random_fraction, bandwidth_factor, min_bandwidth) are traced, so that
    settings differing only in them share one compilation."""
    settings = dataclasses.replace(settings, random_fraction=floats[0],
                                   bandwidth_factor=floats[1], min_bandwidth=floats[2])
    dim = len(cards)
    m = obs_n.shape[0]
    has = obs_n >= settings.n_model(dim)
    b = jnp.max(jnp.where(has, jnp.arange(m), 0))
    good, bad = kde.fit_models(obs_x[b], obs_loss[b], obs_n[b], settings, cards)
    nu = kde.n_uniforms(dim, settings.num_samples)
    u = jax.vmap(lambda k: jax.random.uniform(k, (nu,)))(jax.random.split(key, n))
    return jax.vmap(lambda ui: kde.propose(ui, good, bad, jnp.any(has), cards, settings))(u)


def ask(key: jax.Array, state: BoxState) -> tuple[jax.Array, float, BoxState]:
    """The current stage's configs: the promoted ones, then new ones.

    Args:
        key: randomness for the new configs (same key and state -> same configs).
        state: a state with no pending stage.

    Returns:
        Unit vectors [n, D] to evaluate at the budget, the budget (epochs, float as
        hpbandster; `stage_info(state)["epochs"]` is `int(budget)`), and the state with the
        stage pending (`stage_info` tells which configs were promoted / model-based).
    """
    if bool(state.pending):
        raise RuntimeError("a stage is pending: tell its losses first")
    if done(state):
        raise RuntimeError(f"all {state.config.n_iterations} iterations are done")
    cfg = state.config
    sched = cfg.sched
    n = int(sched["ns"][bracket(state), int(state.stage)])
    n_prom = int(state.n_prom)
    max_n = state.x.shape[0]
    ks = cfg.kde_settings
    floats = jnp.asarray([ks.random_fraction, ks.bandwidth_factor, ks.min_bandwidth],
                         jnp.float32)
    static = dataclasses.replace(ks, random_fraction=0.0, bandwidth_factor=0.0,
                                 min_bandwidth=0.0)
    vec, mb = _propose_batch(key, state.obs_x, state.obs_loss, state.obs_n, floats,
                             cards=state.cards, settings=static, n=max_n)
    new = np.asarray(vec)[:n - n_prom]
    if cfg.canonicalize is not None:
        new = np.stack([np.asarray(cfg.canonicalize(v), np.float32) for v in new]) if len(
            new) else new
    x = np.asarray(state.x).copy()
    x[n_prom:n] = new
    model_based = np.zeros(max_n, bool)
    model_based[n_prom:n] = np.asarray(mb)[:n - n_prom]
    state = state.replace(x=jnp.asarray(x), pending=jnp.asarray(True), n_stage=jnp.int32(n),
                          model_based=jnp.asarray(model_based))
    return jnp.asarray(x[:n]), float(sched["budgets"][budget_index(state)]), state


def tell(state: BoxState, losses: Any) -> BoxState:
    """Records the stage's losses and moves to the next stage or bracket.

    Args:
        state: the state returned by `ask`.
        losses: [n] losses of the asked configs in order (100 - valid acc); NaN / +-inf mark
            failed evaluations (loss inf: recorded, never promoted).

    Returns:
        The next state.
    """
    if not bool(state.pending):
        raise RuntimeError("no pending stage: ask first")
    n = int(state.n_stage)
    raw = np.asarray(losses, np.float64).reshape(-1)
    if raw.shape[0] != n:
        raise ValueError(f"expected {n} losses, got {raw.shape[0]}")
    loss = np.where(np.isfinite(raw), raw, np.inf).astype(np.float32)
    cfg = state.config
    ns = cfg.sched["ns"]
    b, s, k = budget_index(state), bracket(state), int(state.stage)
    x = np.asarray(state.x)
    obs_x, obs_loss = np.asarray(state.obs_x).copy(), np.asarray(state.obs_loss).copy()
    obs_n = np.asarray(state.obs_n).copy()
    if not (obs_n[b + 1:] >= cfg.kde_settings.n_model(len(state.cards))).any():
        i = obs_n[b]
        if i + n > obs_x.shape[1]:
            raise RuntimeError("observation buffer full (more evaluations than scheduled)")
        obs_x[b, i:i + n], obs_loss[b, i:i + n] = x[:n], loss
        obs_n[b] += n
    inc = dict(inc_x=state.inc_x, inc_loss=state.inc_loss, inc_budget=state.inc_budget)
    if np.isfinite(loss).any():
        j = int(np.argmin(loss))
        ib = int(state.inc_budget)
        if b > ib or (b == ib and loss[j] < float(state.inc_loss)):
            inc = dict(inc_x=jnp.asarray(x[j]), inc_loss=jnp.float32(loss[j]),
                       inc_budget=jnp.int32(b))
    new_x = np.zeros_like(x)
    if k < s:  # promote the ns[s, k+1] best finite losses, in creation order
        rank = np.argsort(np.argsort(loss, kind="stable"), kind="stable")
        advance = np.isfinite(loss) & (rank < ns[s, k + 1])
        n_prom = int(advance.sum())
        new_x[:n_prom] = x[:n][advance]
        iteration, stage = int(state.iteration), k + 1
    else:
        n_prom, iteration, stage = 0, int(state.iteration) + 1, 0
    return state.replace(
        obs_x=jnp.asarray(obs_x), obs_loss=jnp.asarray(obs_loss), obs_n=jnp.asarray(obs_n),
        iteration=jnp.int32(iteration), stage=jnp.int32(stage), x=jnp.asarray(new_x),
        n_prom=jnp.int32(n_prom), pending=jnp.asarray(False), n_stage=jnp.int32(0),
        model_based=jnp.zeros_like(state.model_based), n_evals=state.n_evals + n, **inc)
