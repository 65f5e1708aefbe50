"""Tests for top-configuration selection on recorded runs: Algorithm 1, SH, Hyperband, BOHB."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from nhb.search import hyperband as hb
from nhb.search import selection as sel

cut_fn = jax.jit(sel.successive_cut)
HB_STATIC = ("eta", "min_budget", "n_brackets", "return_trace")
hb_fn = jax.jit(sel.hyperband, static_argnames=HB_STATIC)
bohb_fn = jax.jit(sel.bohb, static_argnames=(*HB_STATIC, "cards"))
metrics_fn = jax.jit(sel.metrics, static_argnames="ks")


def ref_cut(scores, first, interval, cut, decay, fs):
    """Plain-Python Algorithm 1: (order, resources, iterations, alive sizes per iteration)."""
    n, k = scores.shape
    alive, t, res, it, sizes, out = list(range(n)), 0, 0, 0, [n], []
    while len(alive) > fs:
        t_new = min(t + (first if it == 0 else interval), k)
        res += len(alive) * (t_new - t)
        t = t_new
        s = {i: scores[i, t - 1] if np.isfinite(scores[i, t - 1]) else -np.inf for i in alive}
        ranked = sorted(alive, key=lambda i: (-s[i], i))
        n_cut = min(max(math.floor(len(alive) * cut + 1e-9), 1), len(alive) - fs)
        alive, out = ranked[:len(ranked) - n_cut], ranked[len(ranked) - n_cut:] + out
        cut, it = min(max(cut * decay, 0.0), 1.0), it + 1
        sizes.append(len(alive))
    return alive + out, res, it, sizes  # survivors are sorted once an iteration ran


def test_algorithm1_hand_example():
    # N=10, K=6, F_i=2, S_i=1, C_i=0.5, C_d=0.5, F_s=2. By hand:
    # it 0: t 0->2, 10 alive (20 units), cut floor(10*.5)=5 -> 5 alive, cut .25
    # it 1: t 2->3, 5 alive (5), floor(5*.25)=1 -> 4, cut .125
    # it 2: t 3->4, 4 alive (4), floor(.5)=0 -> at least 1 -> 3
    # it 3: t 4->5, 3 alive (3), 1 -> 2 = F_s. Resources 32, 4 iterations.
    sc = np.full((10, 6), 100.0, np.float32)  # unused entries: never looked at
    sc[:, 1] = [5, 9, 1, 7, 3, 8, 2, 6, 4, 0]  # it 0 drops 9, 2, 6, 4, 8
    sc[[0, 1, 3, 5, 7], 2] = [6, 2, 2, 9, 5]  # it 1: 1 and 3 tie at 2, the higher index (3) goes
    sc[[0, 1, 5, 7], 3] = [3, 8, 7, 1]  # it 2 drops 7
    sc[[0, 1, 5], 4] = [9, 4, 6]  # it 3 drops 1; survivors 0 (9) then 5 (6)
    r = cut_fn(sc, 2, 1, 0.5, 0.5, 2)
    np.testing.assert_array_equal(r.order, [0, 5, 1, 7, 3, 8, 4, 6, 2, 9])
    assert float(r.resources) == 32.0 and int(r.iterations) == 4
    np.testing.assert_array_equal(np.flatnonzero(r.selected()), [0, 5])
    np.testing.assert_array_equal(np.flatnonzero(r.selected(3)), [0, 1, 5])
    assert ref_cut(sc, 2, 1, 0.5, 0.5, 2)[3] == [10, 5, 4, 3, 2]


def test_plain_successive_halving_sizes():
    r = np.random.default_rng(0)
    v = r.permutation(27).astype(np.float32)
    sc = np.repeat(v[:, None], 9, 1)
    # keep a third: 27 -> 9 -> 3 -> 1; t 0->1->4->7: 27*1 + 9*3 + 3*3 = 63
    out = cut_fn(sc, 1, 3, 2 / 3, 1.0, 1)
    assert float(out.resources) == 63.0 and int(out.iterations) == 3
    np.testing.assert_array_equal(out.order, np.argsort(-v))
    assert ref_cut(sc, 1, 3, 2 / 3, 1.0, 1)[3] == [27, 9, 3, 1]
    # halving 16 -> 8 -> 4 -> 2 -> 1, F_i 1 then 2 intervals: 16 + 16 + 8 + 4 = 44
    out = cut_fn(sc[:16, :8], 1, 2, 0.5, 1.0, 1)
    assert float(out.resources) == 44.0 and int(out.iterations) == 4


def test_training_stops_at_K():
    # K=3, F_i=S_i=2, one cut per iteration (floor(n*.1)=1 or clipped up to 1), F_s=5:
    # t 0->2 (10*2) then 2->3 (9*1), then three iterations at t=K for free: 29 units.
    sc = np.zeros((10, 3), np.float32)
    sc[:, 1] = np.arange(10)  # it 0 drops 0
    sc[:, 2] = 9 - np.arange(10)  # later cuts at t=K: 9, 8, 7, 6
    out = cut_fn(sc, 2, 2, 0.1, 1.0, 5)
    assert float(out.resources) == 29.0 and int(out.iterations) == 5
    np.testing.assert_array_equal(out.order, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0])


def test_failed_runs_are_cut_first():
    sc = np.zeros((7, 2), np.float32)
    sc[:, 0] = [np.nan, 1, -np.inf, 3, 2, 0.5, np.inf]  # 3 failed runs, cut 3 of 7
    sc[:, 1] = [0, 5, np.nan, 1, 7, 2, 0]
    out = cut_fn(sc, 1, 1, 0.5, 1.0, 3)
    np.testing.assert_array_equal(out.order, [4, 1, 5, 3, 0, 2, 6])  # failed: by index
    assert float(out.resources) == 7 + 4 and int(out.iterations) == 2
    assert ref_cut(sc, 1, 1, 0.5, 1.0, 3)[0] == [4, 1, 5, 3, 0, 2, 6]


def test_vmap_grid_equals_loop_and_reference():
    r = np.random.default_rng(1)
    sc = r.normal(size=(50, 10)).astype(np.float32)
    sc[3, 4:] = np.nan
    grid = [(f, i, c, d, s) for f in (1, 4) for i in (1, 3) for c in (0.1, 0.25, 0.5)
            for d in (0.5, 1.0, 1.5) for s in (1, 10)]
    cols = [np.asarray(c) for c in zip(*grid, strict=True)]
    batched = jax.jit(jax.vmap(sel.successive_cut, (None, 0, 0, 0, 0, 0)))(sc, *cols)
    for g, setting in enumerate(grid):
        one = cut_fn(sc, *setting)
        order, res, it, _ = ref_cut(sc, *setting)
        np.testing.assert_array_equal(batched.order[g], one.order)
        np.testing.assert_array_equal(batched.order[g], order)
        assert float(batched.resources[g]) == float(one.resources) == res
        assert int(batched.iterations[g]) == int(one.iterations) == it


HAND_SCHEDULES = {  # eta: (stage budgets, stage sizes per bracket s), by hand for K = 12
    2: ([1, 3, 6, 12], {3: [8, 4, 2, 1], 2: [4, 2, 1], 1: [4, 2], 0: [4]}),
    3: ([1, 4, 12], {2: [9, 3, 1], 1: [3, 1], 0: [3]}),
}


def test_hyperband_brackets_budgets_resources():
    r = np.random.default_rng(2)
    for eta, (budgets, plan) in HAND_SCHEDULES.items():
        sch = hb.schedule(eta, 1, 12)
        assert sch["epochs"].tolist() == budgets
        m = len(budgets)
        for n in (40, 5) if eta == 3 else (40,):  # N=5 < n0 clips the first bracket
            sc = r.integers(0, 3, size=(n, 12)).astype(np.float32)  # many ties
            out, tr = hb_fn(jax.random.key(eta), sc, eta=eta, min_budget=1, final_size=3,
                            return_trace=True)
            picks, reached = np.asarray(tr.picks), np.asarray(tr.reached)
            want_res, best = 0, {}
            for b in range(m):
                s = m - 1 - b
                sizes = [min(x, n) for x in plan[s]]
                assert sizes == [min(x, n) for x in sch["ns"][s, :s + 1]]
                stage_b = budgets[m - 1 - s:]
                p = picks[b][picks[b] >= 0]
                assert len(p) == sizes[0] == len(set(p.tolist()))  # without replacement
                drawn = {int(i): j for j, i in enumerate(p)}  # draw position: tie rule
                members = list(drawn)
                for k, (size, e) in enumerate(zip(sizes, stage_b, strict=False)):
                    want_res += size * (e - (stage_b[k - 1] if k else 0))  # continued
                    on = reached[b][:len(p)] >= e  # trained to this stage's budget
                    assert set(p[on].tolist()) == set(members) and on.sum() == size
                    members.sort(key=lambda i, e=e: (-sc[i, e - 1], drawn[i]))
                    members = members[:sizes[k + 1]] if k + 1 < len(sizes) else []
                for i, t in zip(p, reached[b][:len(p)], strict=True):
                    best[int(i)] = max(best.get(int(i), 0), int(t))
            assert float(out.resources) == want_res and int(out.iterations) == m
            hand = {(2, 40): 8 + 4 * 2 + 2 * 3 + 6 + 4 * 3 + 2 * 3 + 6 + 4 * 6 + 2 * 6 + 4 * 12,
                    (3, 40): 9 + 3 * 3 + 8 + 3 * 4 + 8 + 3 * 12,
                    (3, 5): 5 + 3 * 3 + 8 + 3 * 4 + 8 + 3 * 12}  # N=5 clips 9 draws to 5
            assert want_res == hand.get((eta, n), want_res)
            want = sorted(best, key=lambda i: (-sc[i, best[i] - 1], i))
            want += [i for i in range(n) if i not in best]
            np.testing.assert_array_equal(out.order, want)


def test_hyperband_oracle_and_redraws():
    r = np.random.default_rng(3)
    final = r.uniform(size=30).astype(np.float32)
    sc = np.repeat(final[:, None], 12, 1)
    run = jax.jit(jax.vmap(lambda k: sel.hyperband(k, sc, 3, 1, 5, 6, return_trace=True)))
    outs, trs = run(jax.random.split(jax.random.key(0), 8))
    redrawn = 0
    for order, picks in zip(np.asarray(outs.order), np.asarray(trs.picks), strict=True):
        ev = np.unique(picks[picks >= 0])
        assert order[0] == ev[np.argmax(final[ev])]
        assert set(order[:len(ev)].tolist()) == set(ev.tolist())
        redrawn += len(picks[picks >= 0]) - len(ev)
    assert redrawn > 0  # later brackets draw from the whole set again
    assert np.all(np.asarray(outs.resources) == 2 * 82)


def synthetic(n=240, seed=4):
    r = np.random.default_rng(seed)
    feats = r.integers(0, 4, (n, 3))
    sc = (feats[:, 0] == 2) + 0.1 * r.uniform(size=n)  # feature 0 == 2 is what matters
    return feats, np.repeat(sc[:, None], 9, 1).astype(np.float32) + np.arange(9) * 0.01


def test_bohb_concentrates_after_the_model():
    feats, sc = synthetic()
    keys = jax.random.split(jax.random.key(5), 6)
    run = jax.jit(jax.vmap(lambda k, s, rf: sel.bohb(k, s, feats, 3, 1, 5, 9, cards=(4, 4, 4),
                                                     random_fraction=rf, return_trace=True),
                           (0, None, None)))
    out, tr = run(keys, sc, 1 / 3)
    _, tr_neg = run(keys, -sc, 1 / 3)
    _, hb_tr = jax.jit(jax.vmap(lambda k: sel.hyperband(k, sc, 3, 1, 5, 9,
                                                        return_trace=True)))(keys)
    assert np.all(np.asarray(out.resources) == 3 * 63)  # (9 + 3*2 + 6) + (3*3 + 6) + 3*9
    picks, model = np.asarray(tr.picks), np.asarray(tr.model_based)
    n_model = sel.model_min_points(3, 4, 15)
    assert n_model == 8
    for p, mb, pn in zip(picks, model, np.asarray(tr_neg.picks), strict=True):
        flat = p[p >= 0]
        assert len(flat) == len(set(flat.tolist())) == 45  # never twice (N > 45 draws)
        assert not mb[0, :n_model].any() and mb.sum() > 10  # no model before 8 results
        np.testing.assert_array_equal(p[0, :n_model], pn[0, :n_model])  # scores unused
        assert not np.array_equal(p, pn)
    # uniform draws hit feature 0 == 2 a quarter of the time; the model's draws mostly
    hb_later = np.asarray(hb_tr.picks)[:, 1:]
    frac_hb = np.mean(feats[hb_later[hb_later >= 0], 0] == 2)
    frac_model = np.mean(feats[picks[model], 0] == 2)
    assert frac_model > 0.8 and frac_hb < 0.35, (frac_model, frac_hb)
    # random_fraction 1: uniform draws only, still without repeats
    _, tr1 = run(keys, sc, 1.0)
    assert not np.asarray(tr1.model_based).any()
    p1 = np.asarray(tr1.picks)
    assert all(len(set(p[p >= 0].tolist())) == 45 for p in p1)
    assert abs(np.mean(feats[p1[p1 >= 0], 0] == 2) - 0.25) < 0.1


def test_bohb_reuses_candidates_once_all_are_sampled():
    feats, sc = synthetic(n=12)
    _, tr = jax.jit(lambda k: sel.bohb(k, sc, feats, 3, 1, 3, 4, cards=(4, 4, 4),
                                       return_trace=True))(jax.random.key(0))
    picks = np.asarray(tr.picks)  # draws 9, 3, 3, 9: all 12 in the first three brackets
    for p in picks:
        assert len(set(p[p >= 0].tolist())) == len(p[p >= 0])
    assert set(picks[:3][picks[:3] >= 0].tolist()) == set(range(12))
    assert len(picks[3][picks[3] >= 0]) == 9


def test_metrics_hand_examples():
    final = np.asarray([0.9, 0.5, 0.95, 0.7, 0.8, 0.6, 0.85, 0.4, 0.3, np.nan], np.float32)
    order = np.asarray([0, 4, 1, 2, 3, 5, 6, 7, 8, 9])  # true ranking: 2, 0, 6, 4, 3, ...
    m = metrics_fn(order, 3, final)  # set {0, 4, 1}
    np.testing.assert_allclose([m["top3"], m["top5"], m["gap"]], [1 / 3, 2 / 5, 0.05],
                               rtol=1e-6)
    m = metrics_fn(order, 4, final)  # + 2: the best
    np.testing.assert_allclose([m["top3"], m["top5"], m["gap"]], [2 / 3, 3 / 5, 0.0])
    tied = np.asarray([0.9, 0.9, 0.9, 0.9, 0.5, 0.1], np.float32)  # top-3 = {0, 1, 2}
    m = metrics_fn(np.asarray([3, 4, 5, 0, 1, 2]), 2, tied, ks=(3,))
    assert float(m["top3"]) == 0.0 and float(m["gap"]) == 0.0
    # the paper's example: a set of 10 holding the two best but not the third -> 2/3
    r = np.random.default_rng(6)
    final = r.permutation(40).astype(np.float32)
    best = np.argsort(-final)
    order = np.concatenate([best[[0, 1]], best[3:], best[[2]]])
    m = jax.vmap(metrics_fn, (None, 0, None))(order, jnp.asarray([10, 39, 40]), final)
    np.testing.assert_allclose(m["top3"], [2 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(m["top5"], [0.8, 0.8, 1.0])  # 3rd best is last
    np.testing.assert_allclose(m["gap"], [0.0, 0.0, 0.0])


def test_pareto_front_hand_example():
    res = [1, 2, 2, 3, 0.5, 4, 1, np.nan, 5]
    acc = [0.5, 0.7, 0.6, 0.7, 0.2, 0.9, 0.5, 1.0, 0.9]
    np.testing.assert_array_equal(np.flatnonzero(sel.pareto_front(res, acc)), [0, 1, 4, 5, 6])
    gap = [1 - a for a in acc]
    np.testing.assert_array_equal(np.flatnonzero(sel.pareto_front(res, gap, False)),
                                  [0, 1, 4, 5, 6])
    np.testing.assert_array_equal(np.flatnonzero(sel.pareto_front(res, gap)), [4])
