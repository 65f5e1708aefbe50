"""Selecting the top configurations of a FIXED candidate set by partial training (NAP2 §3.4).

Simulated on recorded runs, like a tabular benchmark: the caller gives `scores` float [N, K],
the score of candidate n after k+1 snapshot intervals of training (higher is better): for the
NAP2 agent the predictor's predicted final accuracy from the first k+1 snapshots, for the
SH / Hyperband / BOHB baselines minus the validation loss at that snapshot. Nothing is
trained: an agent only decides which candidates get how many intervals, and what it returns.
Everything is a pure jittable function; per-setting numbers are traced, so a grid of agent
settings runs as one `jax.vmap` (only shapes and bracket schedules are static).

Resource unit (paper §4.2): one snapshot interval (S SGD steps, the paper's 100 mini-batch
steps) of one network. Training is continued, never restarted: a candidate trained to t
intervals and later to t' costs t' - t more units.

Algorithm 1 (`successive_cut`), inputs M (the candidate set), F_i (`first`: intervals trained
in the first iteration), C_i (`cut`: starting cut fraction), C_d (`cut_decay`: its factor per
iteration), S_i (`interval`: intervals per later iteration), F_s (`final_size`):

    t = 0, cut = C_i
    while |M| > F_s:
        t' = min(t + (F_i if first iteration else S_i), K); train M from t to t'  (|M| (t'-t))
        P = scores[M, t' - 1]
        drop the clip(floor(|M| cut), 1, |M| - F_s) lowest of P from M;  cut = clip(cut C_d, 0, 1)

Successive halving (paper §4.3) is the same loop on validation-loss scores with C_d = 1.
Assumptions and tie rules:

- a non-finite score (NaN, +-inf) is a failed run: it counts as -inf and ranks last;
- ties are broken by index: of equal scores the higher index is dropped (ranked) first;
- F_i and S_i below 1 count as 1, F_s is clipped to [1, N]; once t = K further iterations
  cut on the last snapshot at no cost; `floor` has a 1e-6 relative tolerance for float32
  rounding (180 x 0.65 cuts 117, float32 gives 116.99999);
- the returned `order` is a full ranking: survivors by their last score, then the eliminated
  ones, latest eliminated first, each group by its score when it was cut.

`hyperband` (Li et al.) runs hpbandster's bracket schedule (`nhb.search.hyperband.schedule`,
max budget K intervals, stage budgets `int(budget)` >= 1 intervals) over the candidate set;
each bracket draws its n0 candidates uniformly without replacement from the whole set (n0
clipped to N), trains them to the stage budget, keeps the best ns[k+1] (ties: earlier drawn
first) and continues them to the next budget, charging only the increment. A candidate drawn
again in a later bracket is retrained from scratch there (charged again). The returned
ranking (paper §4.3, "selected based on their most recent performance") is every evaluated
candidate by its score at the largest budget it reached, never-evaluated candidates last.

`bohb` (Falkner et al.) is Hyperband whose new candidates come from hpbandster-BOHB's TPE
model (the Aitchison-Aitken KDEs of `nhb.search.bohb`; hpbandster's defaults: top_n_percent
15, min_points_in_model dim + 1, random_fraction 1/3, min_bandwidth 1e-3; bandwidth_factor 3
widens only continuous dimensions, so it plays no role for categorical codes). Observations
are (features, loss = -score) at each budget as they are made (new candidates one at a time,
each drawn after the previous one's result; promoted ones when their stage is trained), not
recorded once a model exists at a larger budget; the model is that of the largest budget with
enough observations (good = best 15 %, at least dim + 1; bad = the next ones).
Finite-set form of BOHB's sample-and-maximise: instead of scoring `num_samples`
perturbations of good points, every not-yet-sampled candidate of the set is scored with
hpbandster's `max(1e-32, g(x)) / max(l(x), 1e-32)` and the minimum (max l/g) is taken (a
non-finite ratio with a finite l(x) first, as hpbandster takes it at once; ties at random);
without a model, with probability random_fraction, or when nothing is eligible, a uniform
not-yet-sampled candidate. Once every candidate has been sampled, candidates not yet in the
bracket are used. Two changes to statsmodels' kernel, needed because every value of the set
is scored (hpbandster's candidates mostly keep the values of good points): the kernel of a
differing value is h / (c - 1) with c the feature's cardinality (`cards`), not the number of
values present in the KDE's data (with one value present that is h / 0: l(x) = inf for every
other value, which would then win the maximisation), and h is clipped to (c - 1) / c (the
kernel's range; above it a differing value would weigh more than the datum's own).

Brackets run as one `lax.scan` (stages padded to the largest bracket), so compilation does
not grow with `n_brackets`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from nhb.search.bohb import _kde_pdf, _kde_stats, model_min_points
from nhb.search.hyperband import schedule


@struct.dataclass
class Selection:
    """An agent's result.

    Attributes:
        order: int32 [N] full ranking, best first (the selected set is its head).
        resources: float32 resource units spent (intervals x networks).
        iterations: int32 agent iterations (`successive_cut`) or brackets (Hyperband, BOHB).
        final_size: int32 size of the returned set.
    """

    order: jax.Array
    resources: jax.Array
    iterations: jax.Array
    final_size: jax.Array

    def selected(self, final_size: jax.Array | int | None = None) -> jax.Array:
        """Bool [N] mask of the first `final_size` (default: the agent's) of `order`."""
        return selected_mask(self.order, self.final_size if final_size is None else final_size)


@struct.dataclass
class Trace:
    """What each Hyperband / BOHB bracket did (column j: the bracket's j-th new candidate).

    Attributes:
        picks: int32 [B, W] candidates drawn per bracket in draw order (-1: none).
        reached: int32 [B, W] intervals each was trained to in that bracket (0: none).
        model_based: bool [B, W] drawn by the BOHB model (False: uniform).
    """

    picks: jax.Array
    reached: jax.Array
    model_based: jax.Array


def selected_mask(order: jax.Array, final_size: jax.Array | int) -> jax.Array:
    """Bool [N] mask of the first `final_size` entries of the ranking `order` [N]."""
    n = order.shape[-1]
    return jnp.zeros(n, bool).at[order].set(jnp.arange(n) < final_size)


def _clean(s: jax.Array) -> jax.Array:
    """Failed runs (any non-finite score) -> -inf."""
    return jnp.where(jnp.isfinite(s), s, -jnp.inf)


def _rank(*keys: jax.Array) -> jax.Array:
    """Indices sorted by keys (first = primary, ascending), ties by index."""
    return jnp.lexsort((jnp.arange(keys[0].shape[0]), *keys[::-1]))


def successive_cut(scores: jax.Array, first: jax.Array | int, interval: jax.Array | int,
                   cut: jax.Array | float, cut_decay: jax.Array | float,
                   final_size: jax.Array | int) -> Selection:
    """NAP2's Algorithm 1 (and successive halving with cut_decay 1); see the module docstring.

    Args:
        scores: float [N, K] score after k+1 intervals (higher is better; NaN = failed).
        first: F_i, intervals trained in the first iteration.
        interval: S_i, intervals trained in each later iteration.
        cut: C_i, starting fraction of the alive candidates dropped per iteration.
        cut_decay: C_d, factor applied to the cut fraction after each iteration.
        final_size: F_s, candidates returned.

    Returns:
        `Selection` (iterations = agent iterations).
    """
    scores = jnp.asarray(scores)
    n, k = scores.shape
    idx = jnp.arange(n)
    fs = jnp.clip(jnp.asarray(final_size, jnp.int32), 1, n)
    steps = (jnp.maximum(jnp.asarray(first, jnp.int32), 1),
             jnp.maximum(jnp.asarray(interval, jnp.int32), 1))
    decay = jnp.asarray(cut_decay, jnp.float32)

    def body(st: tuple) -> tuple:
        alive, t, c, res, it, last, dropped = st
        n_alive = jnp.sum(alive, dtype=jnp.int32)
        t_new = jnp.minimum(t + jnp.where(it == 0, steps[0], steps[1]), k)
        s = _clean(jax.lax.dynamic_index_in_dim(scores, t_new - 1, 1, keepdims=False))
        n_cut = jnp.floor(n_alive * c * (1 + 1e-6)).astype(jnp.int32)
        n_cut = jnp.clip(n_cut, 1, n_alive - fs)
        pos = jnp.zeros(n, jnp.int32).at[_rank(~alive, -s)].set(idx)  # alive first, best first
        drop = alive & (pos >= n_alive - n_cut)
        return (alive & ~drop, t_new, jnp.clip(c * decay, 0.0, 1.0),
                res + n_alive * (t_new - t), it + 1, jnp.where(alive, s, last),
                jnp.where(drop, it, dropped))

    init = (jnp.ones(n, bool), jnp.int32(0), jnp.clip(jnp.asarray(cut, jnp.float32), 0.0, 1.0),
            jnp.int32(0), jnp.int32(0), jnp.full(n, -jnp.inf, jnp.float32),
            jnp.full(n, jnp.iinfo(jnp.int32).max, jnp.int32))
    _, _, _, res, it, last, dropped = jax.lax.while_loop(lambda st: jnp.sum(st[0]) > fs, body,
                                                         init)
    return Selection(order=_rank(-dropped, -last).astype(jnp.int32),
                     resources=res.astype(jnp.float32), iterations=it, final_size=fs)


# proposer: (key, state, n0, budget index, budget) -> (picks int32 [W], model_based [W], state),
# only the first n0 count; observer: (state, candidates [W], mask [W], scores [W], budget index)
Proposer = Callable[..., tuple[jax.Array, jax.Array, Any]]
Observer = Callable[..., Any]


def bracket_plan(eta: int, min_budget: float, k: int, n: int,
                 n_brackets: int | None = None) -> dict[str, np.ndarray]:
    """The static bracket plan (hpbandster's, bracket i: s = M - 1 - i % M) on N candidates.

    Args:
        eta, min_budget: halving rate and smallest budget (intervals); the largest is K.
        k, n: K intervals recorded, N candidates.
        n_brackets: brackets run (hpbandster's iterations); None: one full round (M).

    Returns:
        Dict of int32 arrays: `first` [B] index of each bracket's first budget, `sizes` [B, M]
        stage sizes clipped to N (0: no such stage), `budgets` [B, M] stage budgets in
        intervals (the bracket's last one repeated past its stages).
    """
    sch = schedule(eta, min_budget, k)
    ep, ns, m = sch["epochs"], sch["ns"], len(sch["epochs"])
    s = m - 1 - np.arange(m if n_brackets is None else n_brackets) % m
    first = m - 1 - s
    budgets = ep[np.minimum(first[:, None] + np.arange(m), m - 1)]
    return dict(first=first.astype(np.int32), sizes=np.minimum(ns[s], n).astype(np.int32),
                budgets=budgets.astype(np.int32))


def successive_halving_bracket(scores: jax.Array, picks: jax.Array, sizes: jax.Array,
                               budgets: jax.Array, observe: Observer | None = None,
                               state: Any = None, first_budget: jax.Array | int = 0
                               ) -> tuple[jax.Array, jax.Array, Any]:
    """One bracket on drawn candidates, training continued: stage j trains the best sizes[j]
    of stage j - 1 (by their score there; ties: earlier drawn first) to budgets[j] intervals.

    Args:
        scores: float [N, K]; picks: int [W] drawn candidates (the first sizes[0] count).
        sizes, budgets: int [S] stage sizes (non-increasing, 0: no stage) and budgets.
        observe: called as observe(state, picks, stage mask, scores, budget index), stages >= 1.
        state, first_budget: the observer's state; the budget index of stage 0.

    Returns:
        (reached int32 [W] intervals per pick (0: not trained), resources int32, state).
    """
    sizes, budgets = jnp.asarray(sizes, jnp.int32), jnp.asarray(budgets, jnp.int32)
    pos = jnp.arange(picks.shape[0])
    mem = pos < sizes[0]
    reached, res, prev = jnp.zeros(pos.shape, jnp.int32), jnp.int32(0), jnp.int32(0)
    for j in range(sizes.shape[0]):
        e = budgets[j]
        res, prev = res + sizes[j] * (e - prev), e
        reached = jnp.where(mem, e, reached)
        sc = _clean(scores[picks, e - 1])
        if j > 0 and observe is not None:
            state = observe(state, picks, mem, sc, first_budget + j)
        if j + 1 < sizes.shape[0]:
            rank = jnp.zeros(pos.shape, jnp.int32).at[_rank(~mem, -sc)].set(pos)
            mem = mem & (rank < sizes[j + 1])
    return reached, res, state


def _brackets(key: jax.Array, scores: jax.Array, plan: dict[str, np.ndarray],
              final_size: jax.Array | int, propose: Proposer, observe: Observer | None,
              state: Any) -> tuple[Selection, Trace]:
    """Runs the plan's brackets (one `lax.scan`); ranks by the score at the largest budget."""
    n = scores.shape[0]
    w = int(plan["sizes"][:, 0].max())

    def bracket(carry: tuple, xs: tuple) -> tuple:
        state, reached_all, res = carry
        b, first, sizes, budgets = xs
        picks, model, state = propose(jax.random.fold_in(key, b), state, sizes[0], first,
                                      budgets[0])
        reached, r, state = successive_halving_bracket(scores, picks, sizes, budgets, observe,
                                                       state, first)
        valid = jnp.arange(w) < sizes[0]
        return ((state, reached_all.at[picks].max(reached), res + r),
                (jnp.where(valid, picks, -1).astype(jnp.int32), reached, model & valid))

    xs = (jnp.arange(len(plan["first"])),
          *(jnp.asarray(plan[c]) for c in ("first", "sizes", "budgets")))
    init = (state, jnp.zeros(n, jnp.int32), jnp.int32(0))
    (_, reached_all, res), rows = jax.lax.scan(bracket, init, xs)
    ev = reached_all > 0
    at = jnp.maximum(reached_all, 1)[:, None] - 1
    last = jnp.where(ev, _clean(jnp.take_along_axis(scores, at, 1)[:, 0]), 0.0)
    sel = Selection(order=_rank(~ev, -last).astype(jnp.int32), resources=res.astype(jnp.float32),
                    iterations=jnp.int32(len(plan["first"])),
                    final_size=jnp.clip(jnp.asarray(final_size, jnp.int32), 1, n))
    return sel, Trace(*rows)


def hyperband(key: jax.Array, scores: jax.Array, eta: int, min_budget: float,
              final_size: jax.Array | int, n_brackets: int | None = None, *,
              return_trace: bool = False) -> Selection | tuple[Selection, Trace]:
    """Hyperband over the candidate set with uniform draws (see the module docstring).

    Args:
        key: PRNG key.
        scores: float [N, K] minus validation loss after k+1 intervals.
        eta, min_budget: static halving rate and smallest budget (intervals; the largest: K).
        final_size: candidates returned (`Selection.final_size`).
        n_brackets: static number of brackets (None: one full round of hpbandster's brackets).
        return_trace: static; also return the `Trace`.

    Returns:
        `Selection` (iterations = brackets), and the `Trace` if asked.
    """
    scores = jnp.asarray(scores)
    n, k = scores.shape
    plan = bracket_plan(eta, min_budget, k, n, n_brackets)
    w = int(plan["sizes"][:, 0].max())

    def propose(key: jax.Array, state: Any, n0: jax.Array, b0: jax.Array, e0: jax.Array) -> tuple:
        del n0, b0, e0
        return jax.random.permutation(key, n)[:w], jnp.zeros(w, bool), state

    out = _brackets(key, scores, plan, final_size, propose, None, None)
    return out if return_trace else out[0]


def bohb(key: jax.Array, scores: jax.Array, features: jax.Array, eta: int, min_budget: float,
         final_size: jax.Array | int, n_brackets: int | None = None, *, cards: tuple[int, ...],
         random_fraction: jax.Array | float = 1 / 3, min_bandwidth: jax.Array | float = 1e-3,
         top_n_percent: int = 15, min_points_in_model: int | None = None,
         return_trace: bool = False) -> Selection | tuple[Selection, Trace]:
    """BOHB over the candidate set: Hyperband with the finite-set TPE draw (module docstring).

    Args:
        key: PRNG key.
        scores: float [N, K] minus validation loss after k+1 intervals.
        features: int [N, D] categorical codes of the candidates.
        eta, min_budget, final_size, n_brackets, return_trace: as `hyperband`.
        cards: static categories per feature (each <= 32).
        random_fraction: probability of a uniform draw with a model.
        min_bandwidth: lower clip of the KDE bandwidths.
        top_n_percent, min_points_in_model: static hpbandster settings (None: dim + 1).

    Returns:
        `Selection` (iterations = brackets), and the `Trace` if asked.
    """
    scores = jnp.asarray(scores)
    n, k = scores.shape
    d = features.shape[1]
    if len(cards) != d or max(cards) > 32:
        raise ValueError(f"cards {cards} do not fit features of {d} dims (each <= 32)")
    feats = jnp.asarray(features, jnp.int32)
    mp = max(min_points_in_model or d + 1, d + 1)
    n_model = model_min_points(d, mp, top_n_percent)
    plan = bracket_plan(eta, min_budget, k, n, n_brackets)
    m = plan["sizes"].shape[1]
    w = int(plan["sizes"][:, 0].max())
    count = np.zeros(m, np.int64)
    np.add.at(count, np.minimum(plan["first"][:, None] + np.arange(m), m - 1), plan["sizes"])
    cap = int(count.max())  # observations per budget never exceed this
    slot = jnp.arange(cap)
    card = jnp.asarray(cards, jnp.int32)
    bw_max = (card - 1) / card  # the Aitchison-Aitken kernel's range: uniform at the top

    def observe(st: tuple, cand: jax.Array, mask: jax.Array, sc: jax.Array,
                bi: jax.Array) -> tuple:
        ox, ol, on, sampled = st
        bi = jnp.minimum(bi, m - 1)  # past a bracket's stages the mask is empty
        ok = mask & ~jnp.any((jnp.arange(m) > bi) & (on >= n_model))
        at = jnp.where(ok, on[bi] + jnp.cumsum(ok) - 1, cap)  # cap: dropped
        return (ox.at[bi, at].set(feats[cand], mode="drop"),
                ol.at[bi, at].set(-sc, mode="drop"),
                on.at[bi].add(jnp.sum(ok, dtype=jnp.int32)), sampled)

    def draw(key: jax.Array, st: tuple, in_bracket: jax.Array) -> tuple[jax.Array, jax.Array]:
        ox, ol, on, sampled = st
        k_frac, k_tie = jax.random.split(key)
        has = on >= n_model
        b = jnp.max(jnp.where(has, jnp.arange(m), 0))
        nb = on[b]
        srt = jnp.argsort(jnp.where(slot < nb, ol[b], jnp.inf), stable=True)
        x = ox[b][srt]  # rows by loss
        n_good = jnp.maximum(mp, (top_n_percent * nb) // 100)
        n_bad = jnp.maximum(mp, ((100 - top_n_percent) * nb) // 100)
        good_n, bad_n = jnp.minimum(n_good, nb), jnp.clip(nb - n_good, 0, n_bad)
        good, bad = slot < good_n, (slot >= n_good) & (slot < n_good + bad_n)
        bw_g = jnp.minimum(_kde_stats(x, good, good_n, cards, min_bandwidth)[0], bw_max)
        bw_b = jnp.minimum(_kde_stats(x, bad, bad_n, cards, min_bandwidth)[0], bw_max)
        lx = _kde_pdf(feats, x, good, good_n, bw_g, card)
        gx = _kde_pdf(feats, x, bad, bad_n, bw_b, card)
        tiny = jnp.float32(1e-32)
        val = jnp.where(gx > tiny, gx, tiny) / jnp.where(tiny > lx, tiny, lx)
        avail = ~sampled & ~in_bracket
        avail = jnp.where(jnp.any(avail), avail, ~in_bracket)
        at_once = avail & ~jnp.isfinite(val) & jnp.isfinite(lx)
        ok = avail & (at_once | jnp.isfinite(val))
        v = jnp.where(at_once, -jnp.inf, jnp.where(ok, val, jnp.inf))
        u = jax.random.uniform(k_tie, (n,))
        best = ok & (v == jnp.min(v))
        use = jnp.any(has) & (jax.random.uniform(k_frac) >= random_fraction) & jnp.any(ok)
        pick = jnp.argmax(jnp.where(jnp.where(use, best, avail), u, -1.0))
        return pick.astype(jnp.int32), use

    def propose(key: jax.Array, st: tuple, n0: jax.Array, b0: jax.Array,
                e0: jax.Array) -> tuple:
        def one(carry: tuple, xs: tuple) -> tuple:  # draws one at a time, each then evaluated
            st, in_bracket = carry
            key, valid = xs
            pick, use = draw(key, st, in_bracket)
            st = observe(st, pick[None], valid[None], _clean(scores[pick, e0 - 1])[None], b0)
            st = (*st[:3], st[3].at[pick].max(valid))
            return (st, in_bracket.at[pick].max(valid)), (pick, use)

        xs = (jax.random.split(key, w), jnp.arange(w) < n0)
        (st, _), (picks, model) = jax.lax.scan(one, (st, jnp.zeros(n, bool)), xs)
        return picks, model, st

    state = (jnp.zeros((m, cap, d), jnp.int32), jnp.full((m, cap), jnp.inf, jnp.float32),
             jnp.zeros(m, jnp.int32), jnp.zeros(n, bool))
    out = _brackets(key, scores, plan, final_size, propose, observe, state)
    return out if return_trace else out[0]


def metrics(selection_order: jax.Array, final_size: jax.Array | int, final: jax.Array,
            ks: tuple[int, ...] = (3, 5)) -> dict[str, jax.Array]:
    """The paper's §4.2 metrics of a returned set (the first `final_size` of the ranking).

    Args:
        selection_order: int [N] ranking, best first.
        final_size: size of the returned set.
        final: float [N] true final accuracy (NaN: failed, never in a true top-K).
        ks: static K values of top-K precision.

    Returns:
        Dict: `top{K}` = |set ∩ true top-K| / K (true top-K by `final`, ties: lower index
        first) and `gap` = max(final) - max(final over the set) (0 is best; inf if empty).
    """
    n = final.shape[0]
    sel = selected_mask(selection_order, final_size)
    f = _clean(jnp.asarray(final, jnp.float32))
    true_rank = jnp.zeros(n, jnp.int32).at[_rank(-f)].set(jnp.arange(n))
    out = {f"top{k}": jnp.sum(sel & (true_rank < k)) / jnp.float32(k) for k in ks}
    out["gap"] = jnp.max(f) - jnp.max(jnp.where(sel, f, -jnp.inf))
    return out


def pareto_front(resources: np.ndarray, quality: np.ndarray,
                 higher_is_better: bool = True) -> np.ndarray:
    """Bool mask of the points no other point dominates (<= resources and >= quality, one of
    them strict); equal points are all kept, points with a NaN are never on the front.

    Args:
        resources: float [P] cost of each point; quality: float [P] its quality.
        higher_is_better: False when lower quality is better (e.g. the accuracy gap).

    Returns:
        bool [P].
    """
    r = np.asarray(resources, np.float64)
    q = np.asarray(quality, np.float64) * (1 if higher_is_better else -1)
    ok = ~(np.isnan(r) | np.isnan(q))
    rv, qv = r[ok], q[ok]
    srt = np.lexsort((-qv, rv))  # resources ascending, quality descending
    rs, qs = rv[srt], qv[srt]
    start = np.searchsorted(rs, rs, side="left")  # first point of equal resources
    best_before = np.where(start > 0, np.maximum.accumulate(qs)[start - 1], -np.inf)
    nd = np.zeros(rs.shape, bool)
    nd[srt] = (qs == qs[start]) & (qs > best_before)
    front = np.zeros(r.shape, bool)
    front[ok] = nd
    return front
