"""hpbandster's BOHB config generator: statsmodels' `KDEMultivariate` and `get_config` in jnp.

hpbandster (`optimizers/config_generators/bohb.py`) fits, per budget, two
`statsmodels.nonparametric.KDEMultivariate(data, var_type, bw='normal_reference')` on the
ConfigSpace vectors of its results: 'c' (Gaussian kernel) for float AND integer
hyperparameters (a UniformInteger has no `choices`), 'u' (Aitchison-Aitken) for categoricals.
Here `cards[j]` = 0 marks a 'c' dimension (unit interval), L > 0 a categorical with L choices
(vector value = category index).

- bandwidth (statsmodels `_normal_reference`, the same for 'c' and 'u'): `1.06 * std *
  n^(-1 / (4 + D))`, population std (`np.std`), D = all dimensions; hpbandster then clips
  below at `min_bandwidth`;
- pdf (statsmodels `gpke` / `pdf`): `sum_i prod_j k_j(x_j, X_ij) / prod_{j in c} bw_j / n`,
  Gaussian `k = exp(-(X - x)^2 / (2 bw^2)) / sqrt(2 pi)`, Aitchison-Aitken `k = 1 - bw` on
  the datum's category, else `bw / (L - 1)`, L = number of distinct values *in that KDE's
  data* (L = 1 gives inf, as numpy's division by zero; bw > 1 gives a negative kernel);
- candidates (`get_config`): a uniformly chosen good datum; a 'c' dimension is redrawn from
  `truncnorm(-m/bw, (1-m)/bw, loc=m, scale=bw)` with `bw = bandwidth_factor * max(bw,
  min_bandwidth)` (here by inversion of the CDF at a given uniform, as `truncnorm.ppf`), a
  categorical keeps the datum's value w.p. `1 - bw`, else a uniform category;
- score `max(1e-32, g(x)) / max(l(x), 1e-32)` with Python `max` semantics (a NaN first
  argument loses, a NaN second one wins); candidates are visited in order, a non-finite score
  with a finite l(x) is taken at once (the early break), else the first minimum; with no
  pick, with probability `random_fraction`, or without a model: a uniform config.

Densities are computed in float32 but kept in log space (`density` gives sign and log|pdf|),
so the products of many small kernels and the g/l ratio do not under- or overflow where
statsmodels' float64 does not; inf / NaN densities (single-level categoricals) follow float64
numpy (a datum's term is NaN when its continuous product underflows float64, i.e. its log is
below -745.13). `categorical_stats` / `categorical_pdf` are the all-categorical float32 version
used by `nhb.search.bohb` (kept bit for bit).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.scipy.special import ndtr, ndtri

LOG_TINY = math.log(1e-32)  # hpbandster's clamp of g and l, in log space
LOG_F64_MIN = -745.13  # exp(x) rounds to 0 in float64 below this
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def model_min_points(dim: int, min_points: int, top_n_percent: int) -> int:
    """The number of results at one budget from which hpbandster builds a model there."""
    for n in range(1, 100_000):
        n_good = max(min_points, (top_n_percent * n) // 100)
        n_bad = max(min_points, ((100 - top_n_percent) * n) // 100)
        if n >= min_points and min(n_good, n) > dim and min(max(n - n_good, 0), n_bad) > dim:
            return n
    raise ValueError("no model can ever be built with these settings")


# ----------------------------------------------------------------- all-categorical (bohb.py)

def categorical_stats(x: jax.Array, mask: jax.Array, count: jax.Array, cards: tuple[int, ...],
                      min_bw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Bandwidths [D] and numbers of distinct levels [D] of the masked rows of x [N, D]."""
    dim = x.shape[1]
    w = mask[:, None].astype(jnp.float32)
    c = jnp.maximum(count, 1).astype(jnp.float32)
    xf = x.astype(jnp.float32)
    mean = jnp.sum(w * xf, 0) / c
    std = jnp.sqrt(jnp.sum(w * (xf - mean) ** 2, 0) / c)
    bw = jnp.maximum(1.06 * std * c ** (-1.0 / (4 + dim)), min_bw)
    # distinct levels: popcount of the OR of one bit per present category (cards <= 32)
    assert max(cards) <= 32, cards
    onehot = jnp.where(mask[:, None], jnp.left_shift(jnp.uint32(1), x.astype(jnp.uint32)),
                       jnp.uint32(0))
    seen = jax.lax.reduce(onehot, np.uint32(0), jax.lax.bitwise_or, (0,))
    return bw, jax.lax.population_count(seen).astype(jnp.int32)


def categorical_pdf(xq: jax.Array, x: jax.Array, mask: jax.Array, count: jax.Array,
                    bw: jax.Array, levels: jax.Array) -> jax.Array:
    """statsmodels KDEMultivariate.pdf with Aitchison-Aitken kernels at query rows xq [K, D]."""
    other = bw / (levels - 1).astype(jnp.float32)  # inf where a single level, as numpy
    k = jnp.where(x[None] == xq[:, None], 1.0 - bw, other)  # [K, N, D]
    dens = jnp.prod(k, -1)
    return jnp.sum(jnp.where(mask[None], dens, 0.0), -1) / count.astype(jnp.float32)


# ----------------------------------------------------------------- mixed KDE


@dataclasses.dataclass(frozen=True)
class KDESettings:
    """hpbandster's config-generator settings (its defaults).

    Attributes:
        num_samples: candidates per model-based config.
        top_n_percent: percentage of results in the good KDE.
        min_points_in_model: None for dim + 1 (smaller values are raised to dim + 1).
        random_fraction: probability of a uniform config even with a model.
        bandwidth_factor: widening of 'c' bandwidths for drawing candidates.
        min_bandwidth: lower clip of all bandwidths.
    """

    num_samples: int = 64
    top_n_percent: int = 15
    min_points_in_model: int | None = None
    random_fraction: float = 1 / 3
    bandwidth_factor: float = 3.0
    min_bandwidth: float = 1e-3

    def min_points(self, dim: int) -> int:
        """min_points_in_model as hpbandster uses it."""
        return max(self.min_points_in_model or dim + 1, dim + 1)

    def n_model(self, dim: int) -> int:
        """Results at one budget from which a model exists there."""
        return model_min_points(dim, self.min_points(dim), self.top_n_percent)


@struct.dataclass
class KDE:
    """A fitted KDEMultivariate over the masked rows of `data`.

    Attributes:
        data: float32 [N, D] rows (category indices in 'u' columns).
        mask: bool [N] rows that belong to the KDE.
        count: int32 number of masked rows.
        bw: float32 [D] bandwidths, clipped at min_bandwidth.
        levels: int32 [D] distinct values per column among the masked rows.
    """

    data: jax.Array
    mask: jax.Array
    count: jax.Array
    bw: jax.Array
    levels: jax.Array


def fit(x: jax.Array, mask: jax.Array, min_bandwidth: float | jax.Array,
        cards: tuple[int, ...] | None = None) -> KDE:
    """KDEMultivariate(bw='normal_reference') of the masked rows, bandwidths clipped.

    Args:
        x: float [N, D] data.
        mask: bool [N] rows to use.
        min_bandwidth: hpbandster's lower clip.
        cards: if given, levels are counted for the 'u' columns only (0 elsewhere).

    Returns:
        The `KDE`.
    """
    x = jnp.asarray(x, jnp.float32)
    n, dim = x.shape
    count = jnp.sum(mask, dtype=jnp.int32)
    w = mask[:, None].astype(jnp.float32)
    c = jnp.maximum(count, 1).astype(jnp.float32)
    mean = jnp.sum(w * x, 0) / c
    std = jnp.sqrt(jnp.sum(w * (x - mean) ** 2, 0) / c)
    bw = jnp.maximum(1.06 * std * c ** (-1.0 / (4 + dim)), min_bandwidth)
    cols = np.arange(dim) if cards is None else np.flatnonzero(np.asarray(cards) != 0)
    levels = jnp.zeros(dim, jnp.int32)
    if cols.size:
        xu = x[:, cols]
        earlier = jnp.tril(jnp.ones((n, n), bool), -1)  # [i, j]: j < i
        dup = jnp.any((xu[:, None] == xu[None]) & (earlier & mask[None, :])[..., None], 1)
        levels = levels.at[cols].set(jnp.sum(mask[:, None] & ~dup, 0, dtype=jnp.int32))
    return KDE(data=x, mask=mask, count=count, bw=bw, levels=levels)


def density(kde: KDE, xq: jax.Array, cards: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The pdf at query rows as sign and log magnitude (float64-like inf / NaN).

    Args:
        kde: the fitted KDE.
        xq: float [Q, D] query rows.
        cards: 0 per 'c' dimension, the number of choices per 'u' dimension.

    Returns:
        sign [Q] (1, -1, 0, or NaN for a NaN pdf) and log|pdf| [Q] (inf for +-inf pdfs).
    """
    xq = jnp.asarray(xq, jnp.float32)
    cont = np.asarray(cards) == 0
    x, bw = kde.data, kde.bw
    if (~cont).any():
        u = np.flatnonzero(~cont)
        other = bw[u] / (kde.levels[u] - 1).astype(jnp.float32)
        k = jnp.where(x[None][..., u] == xq[:, None][..., u], 1.0 - bw[u], other)
        c = jnp.prod(k, -1)  # [Q, N] categorical product (may be inf, negative, NaN)
    else:
        c = jnp.ones((xq.shape[0], x.shape[0]), jnp.float32)
    ci = np.flatnonzero(cont)
    z = (xq[:, None][..., ci] - x[None][..., ci]) / bw[ci]
    logk = jnp.sum(-0.5 * z * z - _HALF_LOG_2PI, -1)  # log prod of Gaussian kernels
    log_bw = jnp.sum(jnp.log(bw[ci]))
    m = kde.mask[None]
    zero64 = logk < LOG_F64_MIN
    nan = jnp.any(m & (jnp.isnan(c) | (jnp.isinf(c) & zero64)), -1)
    pinf = jnp.any(m & (c == jnp.inf) & ~zero64, -1)
    ninf = jnp.any(m & (c == -jnp.inf) & ~zero64, -1)
    fin = m & jnp.isfinite(c) & (c != 0)
    lt = jnp.where(fin, jnp.log(jnp.where(fin, jnp.abs(c), 1.0)) + logk, -jnp.inf)
    top = jnp.max(lt, -1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    s = jnp.sum(jnp.where(fin, jnp.sign(c) * jnp.exp(lt - top), 0.0), -1)
    log_fin = jnp.log(jnp.abs(s)) + top[:, 0] - log_bw - jnp.log(
        jnp.maximum(kde.count, 1).astype(jnp.float32))
    nan = nan | (pinf & ninf)
    sign = jnp.where(nan, jnp.nan, jnp.where(pinf, 1.0, jnp.where(ninf, -1.0, jnp.sign(s))))
    logabs = jnp.where(nan, jnp.nan, jnp.where(pinf | ninf, jnp.inf, log_fin))
    return sign, logabs


def pdf(kde: KDE, xq: jax.Array, cards: tuple[int, ...]) -> jax.Array:
    """KDEMultivariate.pdf at query rows xq [Q, D] (float32: may under/overflow)."""
    sign, logabs = density(kde, xq, cards)
    return sign * jnp.exp(logabs)


def truncnorm_ppf(u: jax.Array, m: jax.Array, scale: jax.Array) -> jax.Array:
    """`scipy.stats.truncnorm.ppf(u, -m/scale, (1-m)/scale, loc=m, scale=scale)` (on [0, 1]).

    The tail away from the mean is inverted through the complementary CDF (no cancellation).
    """
    a, b = -m / scale, (1.0 - m) / scale
    p = ndtr(a) + u * (ndtr(b) - ndtr(a))
    q = ndtr(-b) + (1.0 - u) * (ndtr(-a) - ndtr(-b))  # = 1 - p
    z = jnp.where(p < 0.5, ndtri(p), -ndtri(q))
    return jnp.clip(m + scale * z, 0.0, 1.0)


def n_uniforms(dim: int, num_samples: int) -> int:
    """Uniforms one `propose` consumes."""
    return 1 + dim + num_samples + 2 * num_samples * dim


def split_uniforms(u: jax.Array, dim: int, k: int) -> tuple[jax.Array, ...]:
    """u -> (frac [], uniform config [D], pick [K], keep / truncnorm [K, D], category [K, D])."""
    return (u[0], u[1:1 + dim], u[1 + dim:1 + dim + k],
            u[1 + dim + k:1 + dim + k + k * dim].reshape(k, dim),
            u[1 + dim + k + k * dim:].reshape(k, dim))


def uniform_config(u: jax.Array, cards: tuple[int, ...]) -> jax.Array:
    """ConfigSpace's `sample_configuration` vector from uniforms [D] (before int rounding)."""
    card = jnp.asarray(cards, jnp.float32)
    return jnp.where(card == 0, u, jnp.floor(u * card))


def sample_candidates(u_pick: jax.Array, u_keep: jax.Array, u_cat: jax.Array, good: KDE,
                      cards: tuple[int, ...], bandwidth_factor: float,
                      min_bandwidth: float) -> jax.Array:
    """hpbandster's candidates [K, D] around uniformly picked good data.

    Args:
        u_pick: [K] uniforms choosing the datum (the good KDE's rows are its leading rows).
        u_keep: [K, D] uniforms: truncnorm draw ('c') or keep test ('u').
        u_cat: [K, D] uniforms for the uniform category ('u').
        good: the good KDE.
        cards: 0 per 'c' dimension, choices per 'u' dimension.
        bandwidth_factor: widening of the 'c' bandwidths.
        min_bandwidth: lower clip (as hpbandster, again).

    Returns:
        Candidates [K, D].
    """
    n = jnp.maximum(good.count, 1)
    pick = jnp.clip(jnp.floor(u_pick * n.astype(jnp.float32)).astype(jnp.int32), 0, n - 1)
    datum = good.data[pick]
    bw = jnp.maximum(good.bw, min_bandwidth)
    card = jnp.asarray(cards, jnp.float32)
    c_val = truncnorm_ppf(u_keep, datum, bandwidth_factor * bw)
    u_val = jnp.where(u_keep < 1.0 - bw, jnp.trunc(datum), jnp.floor(u_cat * card))
    return jnp.where(card == 0, c_val, u_val)


def log_score(g_sign: jax.Array, g_log: jax.Array, l_sign: jax.Array,
              l_log: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`max(1e-32, g) / max(l, 1e-32)` in log space with float64 / Python `max` semantics.

    Args:
        g_sign: sign of g (NaN for a NaN g), as `density` gives it.
        g_log: log|g|.
        l_sign: sign of l.
        l_log: log|l|.

    Returns:
        log score (NaN / +inf where the score is non-finite, -inf for 0), whether the score
        is non-finite, whether l is finite.
    """
    log_a = jnp.where((g_sign > 0) & (g_log > LOG_TINY), g_log, LOG_TINY)  # NaN g -> 1e-32
    l_nan = jnp.isnan(l_sign)
    below = ~l_nan & ~((l_sign > 0) & (l_log >= LOG_TINY))
    log_val = log_a - jnp.where(below, LOG_TINY, l_log)  # NaN l stays NaN
    nonfinite = jnp.isnan(log_val) | (log_val == jnp.inf)
    return log_val, nonfinite, ~l_nan & (l_log != jnp.inf)


def score(good: KDE, bad: KDE, cand: jax.Array,
          cards: tuple[int, ...]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """hpbandster's score of candidates [K, D] (l = good pdf, g = bad pdf); see `log_score`."""
    return log_score(*density(bad, cand, cards), *density(good, cand, cards))


def select(log_val: jax.Array, nonfinite: jax.Array, l_finite: jax.Array) -> jax.Array:
    """hpbandster's candidate loop: the first non-finite score with a finite l(x) (break), else
    the first strict minimum of the finite scores; -1 if none."""
    take = nonfinite & l_finite
    finite = ~nonfinite
    best = jnp.argmin(jnp.where(finite, log_val, jnp.inf))
    return jnp.where(jnp.any(take), jnp.argmax(take),
                     jnp.where(jnp.any(finite), best, -1)).astype(jnp.int32)


def fit_models(x: jax.Array, loss: jax.Array, n: jax.Array, settings: KDESettings,
               cards: tuple[int, ...] | None = None) -> tuple[KDE, KDE]:
    """The good and bad KDEs of one budget's results (hpbandster's `new_result` split).

    Args:
        x: float [N, D] result buffer (first n rows used, in recording order).
        loss: float [N] losses (inf for failures).
        n: int number of results.
        settings: the generator settings.
        cards: as for `fit` (None: levels of every column).

    Returns:
        (good, bad) KDEs over the rows sorted by loss (stable), good rows first.
    """
    size, dim = x.shape
    slot = jnp.arange(size)
    order = jnp.argsort(jnp.where(slot < n, loss, jnp.inf), stable=True)
    xs = jnp.asarray(x, jnp.float32)[order]
    mp, top = settings.min_points(dim), settings.top_n_percent
    n_good = jnp.maximum(mp, (top * n) // 100)
    n_bad = jnp.maximum(mp, ((100 - top) * n) // 100)
    good_n, bad_n = jnp.minimum(n_good, n), jnp.clip(n - n_good, 0, n_bad)
    good = fit(xs, slot < good_n, settings.min_bandwidth, cards)
    bad = fit(xs, (slot >= n_good) & (slot < n_good + bad_n), settings.min_bandwidth, cards)
    return good, bad


def propose(u: jax.Array, good: KDE, bad: KDE, has_model: jax.Array, cards: tuple[int, ...],
            settings: KDESettings) -> tuple[jax.Array, jax.Array]:
    """hpbandster's `get_config` vector from uniforms (before ConfigSpace's int rounding).

    Args:
        u: [n_uniforms(D, num_samples)] uniforms.
        good: the good KDE of the largest budget with a model.
        bad: its bad KDE.
        has_model: whether any model exists.
        cards: 0 per 'c' dimension, choices per 'u' dimension.
        settings: the generator settings.

    Returns:
        The vector [D] and whether it is a model-based pick.
    """
    dim = len(cards)
    frac, u_rand, u_pick, u_keep, u_cat = split_uniforms(u, dim, settings.num_samples)
    cand = sample_candidates(u_pick, u_keep, u_cat, good, cards, settings.bandwidth_factor,
                             settings.min_bandwidth)
    chosen = select(*score(good, bad, cand, cards))
    model = has_model & (frac >= settings.random_fraction) & (chosen >= 0)
    vec = jnp.where(model, cand[jnp.maximum(chosen, 0)], uniform_config(u_rand, cards))
    return vec, model
