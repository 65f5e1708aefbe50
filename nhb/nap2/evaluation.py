"""Evaluating NAP2 on recorded runs: predictor quality against baselines, agent grids.

* `rank_quality`: Spearman correlation (SciPy's) of a score after k snapshots with the final
  validation accuracy, for the predictor and two baselines on the same runs: the validation
  accuracy at that snapshot, and a learning-curve extrapolation `a - b^(c - x)` (the form of
  Rorabaugh et al. the paper cites) fitted to the validation accuracies seen so far and read at
  the end of training (`extrapolate`).
* `run_agents`: every agent over a grid of its settings on one candidate set, each grid
  vmapped (`nhb.search.selection`): NAP2's Algorithm 1 on the predictor's scores,
  successive halving, Hyperband and BOHB on minus the validation loss. Each point is
  (resources, top-3 / top-5 precision, accuracy gap) for each final-set size.
* `summarise`: per agent and final-set size, the fold means with 95% confidence intervals
  (Student t over folds), and the best setting within each resource budget ("equal resources").
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.stats

from nhb.search import selection

AGENTS = ("nap2", "sh", "hyperband", "bohb")
KS = (3, 5)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """SciPy's Spearman rank correlation over the finite pairs (NaN if constant)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(x[ok], y[ok]).statistic)


def _curve(x, a, b, c):
    return a - b ** (c - x)


def extrapolate(curve: np.ndarray, x_end: float) -> float:
    """Fits `f(x) = a - b^(c - x)` (a in [0, 1], b in (1, 100], c in [-50, x_end]) to the
    points (1..n, curve) and returns f(x_end); with fewer than 3 points or a failed fit, the
    last point (an assumption: the paper gives no fallback).

    Args:
        curve: float [n] accuracies in [0, 1] after 1..n snapshots.
        x_end: the end of training in snapshot units.

    Returns:
        The extrapolated final accuracy, clipped to [0, 1].
    """
    y = np.asarray(curve, np.float64)
    if len(y) < 3 or not np.isfinite(y).all():
        return float(y[-1]) if np.isfinite(y[-1]) else float("nan")
    x = np.arange(1, len(y) + 1, dtype=np.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, _ = scipy.optimize.curve_fit(_curve, x, y, p0=(min(y[-1] + 0.05, 1.0), 1.5, 1.0),
                                            bounds=([0, 1.0001, -50], [1, 100, x_end]),
                                            maxfev=2000)
        return float(np.clip(_curve(x_end, *p), 0.0, 1.0))
    except (RuntimeError, ValueError):
        return float(y[-1])


def rank_quality(predicted: np.ndarray, valid_acc: np.ndarray, final: np.ndarray,
                 steps: Sequence[int], x_end: float) -> dict[str, dict[str, float]]:
    """Spearman correlations with the final accuracy after `steps` snapshots.

    Args:
        predicted: float [N, K] the predictor's final accuracy after 1..K snapshots.
        valid_acc: float [N, K] validation accuracy (%) at each snapshot.
        final: float [N] final validation accuracy (%).
        steps: snapshot counts to evaluate (clipped to K).
        x_end: the end of training in snapshot units (for the extrapolation).

    Returns:
        {method: {str(step): rho}} for "nap2", "valid_acc" and "lc_extrapolation".
    """
    k = predicted.shape[1]
    out: dict[str, dict[str, float]] = {"nap2": {}, "valid_acc": {}, "lc_extrapolation": {}}
    for s in steps:
        t = min(s, k)
        lc = np.array([extrapolate(v[:t] / 100.0, x_end) for v in valid_acc])
        out["nap2"][str(s)] = spearman(predicted[:, t - 1], final)
        out["valid_acc"][str(s)] = spearman(valid_acc[:, t - 1], final)
        out["lc_extrapolation"][str(s)] = spearman(lc, final)
    return out


@dataclasses.dataclass(frozen=True)
class AgentGrid:
    """The settings each agent is run with (every combination; paper Appendix A.2 style).

    Attributes:
        final_sizes: sizes of the returned set (the paper: 10, 25, 50).
        firsts, intervals: F_i and S_i in snapshot intervals (NAP2 and SH).
        cuts: C_i (NAP2) and the SH cut-off rates (the paper's 0.1 ... 0.5).
        cut_decays: C_d of the NAP2 agent (SH: 1).
        etas: Hyperband / BOHB halving rates (the paper: every legal integer >= 2).
        min_budgets: smallest Hyperband / BOHB budget in intervals.
        seeds: random draws of Hyperband / BOHB per setting.
    """

    final_sizes: tuple[int, ...] = (10, 25)
    firsts: tuple[int, ...] = (1, 2, 3, 4)
    intervals: tuple[int, ...] = (1, 2)
    cuts: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.35, 0.45, 0.5)
    cut_decays: tuple[float, ...] = (0.75, 1.0, 1.5)
    etas: tuple[int, ...] = (2, 3, 4, 6)
    min_budgets: tuple[int, ...] = (1, 2)
    seeds: int = 5


def _points(orders: jax.Array, resources: jax.Array, final_size: int, final: jax.Array,
            settings: list[dict]) -> list[dict]:
    m = jax.vmap(lambda o: selection.metrics(o, final_size, final, KS))(orders)
    m = {k: np.asarray(v) for k, v in m.items()}
    res = np.asarray(resources)
    return [dict(s, resources=float(res[i]), **{f"top{k}_precision": float(m[f"top{k}"][i])
                                                for k in KS}, accuracy_gap=float(m["gap"][i]))
            for i, s in enumerate(settings)]


@functools.lru_cache(maxsize=64)
def _bracket_agent(agent: str, eta: int, min_budget: int, cards: tuple[int, ...]):
    """A jitted, seed-vmapped Hyperband or BOHB (cached: folds share the compilation)."""

    def one(key, neg_loss, features, final_size):
        if agent == "hyperband":
            return selection.hyperband(key, neg_loss, eta, min_budget, final_size)
        return selection.bohb(key, neg_loss, features, eta, min_budget, final_size,
                              cards=cards)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))


_cut_grid = jax.jit(jax.vmap(selection.successive_cut, in_axes=(None, 0, 0, 0, 0, None)))


def run_agents(key: jax.Array, predicted: np.ndarray, valid_loss: np.ndarray,
               final: np.ndarray, features: np.ndarray, cards: tuple[int, ...],
               grid: AgentGrid) -> dict[str, dict[int, list[dict]]]:
    """Every agent over its settings grid on one candidate set.

    Args:
        key: PRNG key (Hyperband / BOHB draws).
        predicted: float [N, K] NAP2's predicted final accuracy after 1..K snapshots.
        valid_loss: float [N, K] validation loss at each snapshot.
        final: float [N] final validation accuracy (%), the truth of the metrics.
        features: int [N, D] categorical codes (BOHB's KDE); cards: their cardinalities.
        grid: the settings.

    Returns:
        {agent: {final_size: [point dicts: the setting, resources, top3_precision,
        top5_precision, accuracy_gap]}}.
    """
    n, k = predicted.shape
    final_j = jnp.asarray(final, jnp.float32)
    neg_loss = -jnp.asarray(valid_loss, jnp.float32)
    out: dict[str, dict[int, list[dict]]] = {a: {} for a in AGENTS}
    for fs in grid.final_sizes:
        if fs >= n:
            raise ValueError(f"final set size {fs} needs more than {fs} candidates; have {n}")
        for agent, scores, decays in (("nap2", jnp.asarray(predicted, jnp.float32),
                                       grid.cut_decays), ("sh", neg_loss, (1.0,))):
            combos = list(itertools.product(grid.firsts, grid.intervals, grid.cuts, decays))
            a = np.array(combos, np.float32).T
            sel = _cut_grid(scores, jnp.asarray(a[0], jnp.int32), jnp.asarray(a[1], jnp.int32),
                            jnp.asarray(a[2]), jnp.asarray(a[3]), jnp.int32(fs))
            settings = [dict(first=f, interval=i, cut=c, cut_decay=d) for f, i, c, d in combos]
            out[agent][fs] = _points(sel.order, sel.resources, fs, final_j, settings)
        for agent in ("hyperband", "bohb"):
            pts = []
            for eta, mb in itertools.product(grid.etas, grid.min_budgets):
                if not mb < k or eta > k:
                    continue
                keys = jax.random.split(jax.random.fold_in(key, eta * 100 + mb), grid.seeds)
                sel = _bracket_agent(agent, eta, mb, cards)(keys, neg_loss, jnp.asarray(
                    features, jnp.int32), jnp.int32(fs))
                settings = [dict(eta=eta, min_budget=mb, seed=s) for s in range(grid.seeds)]
                pts += _points(sel.order, sel.resources, fs, final_j, settings)
            out[agent][fs] = pts
    return out


def _setting_key(p: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in p.items() if k not in (
        "resources", "accuracy_gap", "seed") and not k.endswith("_precision")))


def _ci(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t interval of the mean (0 for one value)."""
    n = len(values)
    if n < 2:
        return 0.0
    return float(scipy.stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))


def summarise(per_fold: Sequence[dict[str, dict[int, list[dict]]]],
              budgets: Sequence[float]) -> dict:
    """Fold means of each agent setting, its Pareto fronts, and equal-resource comparisons.

    Args:
        per_fold: `run_agents` outputs, one per fold (same grids).
        budgets: resource budgets for the equal-resources table.

    Returns:
        {"agents": {agent: {"final_<F>": [points: setting, resources, top3/top5 precision,
        accuracy_gap, each with "<metric>_ci95", and "pareto_top5" / "pareto_gap" flags]}},
        "equal_resources": {"final_<F>": {agent: [{budget, setting, top5_precision,
        top5_precision_ci95, accuracy_gap, accuracy_gap_ci95} or None per budget]}}}.
    """
    metrics = ("resources", "top3_precision", "top5_precision", "accuracy_gap")
    agents: dict[str, dict[str, list[dict]]] = {}
    equal: dict[str, dict[str, list]] = {}
    for agent in per_fold[0]:
        agents[agent] = {}
        for fs in per_fold[0][agent]:
            groups: dict[tuple, list[dict]] = {}
            for fold in per_fold:
                for p in fold[agent][fs]:
                    groups.setdefault(_setting_key(p), []).append(p)
            points = []
            for key, ps in groups.items():
                pt = dict(key)
                for m in metrics:
                    v = np.array([p[m] for p in ps], np.float64)
                    pt[m], pt[f"{m}_ci95"] = float(v.mean()), _ci(v)
                pt["n"] = len(ps)
                points.append(pt)
            res = np.array([p["resources"] for p in points])
            top5 = selection.pareto_front(res, np.array([p["top5_precision"] for p in points]))
            gap = selection.pareto_front(res, np.array([p["accuracy_gap"] for p in points]),
                                         higher_is_better=False)
            for p, a, b in zip(points, top5, gap, strict=True):
                p["pareto_top5"], p["pareto_gap"] = bool(a), bool(b)
            name = f"final_{fs}"
            agents[agent][name] = points
            rows = []
            for b in budgets:
                ok = [p for p in points if p["resources"] <= b]
                best = max(ok, key=lambda p: (p["top5_precision"], -p["accuracy_gap"]),
                           default=None)
                rows.append(None if best is None else dict(
                    budget=b, setting={k: v for k, v in best.items() if k not in metrics
                                       and not k.endswith(("_ci95", "n")) and not
                                       k.startswith("pareto")},
                    **{m: best[m] for m in ("resources", "top5_precision", "accuracy_gap")},
                    top5_precision_ci95=best["top5_precision_ci95"],
                    accuracy_gap_ci95=best["accuracy_gap_ci95"]))
            equal.setdefault(name, {})[agent] = rows
    return {"agents": agents, "equal_resources": equal}


def mse_curve(predicted: np.ndarray, final: np.ndarray) -> list[float]:
    """Mean squared error of the predicted final accuracy (0..1) after 1..K snapshots."""
    ok = np.isfinite(final)
    return [float(np.mean((predicted[ok, t] - final[ok] / 100.0) ** 2))
            for t in range(predicted.shape[1])]
