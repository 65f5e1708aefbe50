"""Tests for the hypervolume and the multi-objective scoring of search runs.

Golden values come from an independent NumPy brute force (the area of the union of the boxes
[p, ref] summed over the cells of the grid the points' coordinates span), always run, and from
pymoo's `HV` indicator when pymoo is installed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import bench, search
from nhb.bench.api import Benchmark
from nhb.search import hypervolume as hv
from nhb.search.selection import pareto_front
from nhb.space import cells as _cells
from nhb.space import nhb2

HV = jax.jit(hv.hypervolume_2d)
ND = jax.jit(hv.non_dominated)


def brute_force_hv(points: np.ndarray, mask: np.ndarray, ref: np.ndarray) -> float:
    """Area of the union of the boxes [p, ref] of the masked finite points inside ref, summed
    cell by cell over the grid of all their coordinates (O(P^3), float64)."""
    p = np.asarray(points, np.float64)
    ok = np.asarray(mask, bool) & np.isfinite(p).all(1) & (p < ref).all(1)
    p = p[ok]
    if not len(p):
        return 0.0
    xs = np.unique(np.append(p[:, 0], ref[0]))
    ys = np.unique(np.append(p[:, 1], ref[1]))
    area = 0.0
    for i in range(len(xs) - 1):
        for j in range(len(ys) - 1):
            if ((p[:, 0] <= xs[i]) & (p[:, 1] <= ys[j])).any():  # cell's lower corner covered
                area += (xs[i + 1] - xs[i]) * (ys[j + 1] - ys[j])
    return area


def _cases(n: int = 60, size: int = 24) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Random point sets on a coarse lattice (many duplicates and ties), some beyond the
    reference point, some NaN, random masks; 1..size points, padded to `size` with masked-out
    points (one shape, one compile)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        pts = rng.integers(0, 9, (size, 2)).astype(np.float32) / 4 - 0.25
        pts[rng.random((size, 2)) < 0.05] = np.nan
        ref = np.array([rng.uniform(1.0, 2.2), rng.uniform(1.0, 2.2)], np.float32)
        mask = (rng.random(size) < 0.8) & (np.arange(size) < rng.integers(1, size + 1))
        out.append((pts, mask, ref))
    return out


def test_matches_brute_force():
    for pts, mask, ref in _cases():
        np.testing.assert_allclose(float(HV(pts, mask, ref)), brute_force_hv(pts, mask, ref),
                                   rtol=1e-6, atol=1e-6)


def test_matches_pymoo():
    pymoo_hv = pytest.importorskip("pymoo.indicators.hv")
    for pts, mask, ref in _cases(30):
        inside = mask & np.isfinite(pts).all(1) & (pts < ref).all(1)
        want = (pymoo_hv.HV(ref_point=ref.astype(np.float64))(pts[inside].astype(np.float64))
                if inside.any() else 0.0)
        np.testing.assert_allclose(float(HV(pts, mask, ref)), want, rtol=1e-6, atol=1e-6)


def test_edge_cases():
    ref = jnp.array([2.0, 3.0])
    one = np.array([[1.0, 1.0]], np.float32)
    assert float(HV(one, [True], ref)) == 2.0  # (2 - 1) * (3 - 1)
    assert float(HV(one, [False], ref)) == 0.0  # empty mask
    assert float(HV(np.zeros((0, 2), np.float32), np.zeros(0, bool), ref)) == 0.0
    beyond = np.array([[2.0, 0.0], [0.0, 3.0], [5.0, 5.0]], np.float32)  # on / past ref
    assert float(HV(beyond, [True] * 3, ref)) == 0.0
    dup = np.array([[1.0, 1.0]] * 4 + [[np.nan, 0.0], [0.0, np.inf]], np.float32)
    assert float(HV(dup, [True] * 6, ref)) == 2.0  # duplicates once, NaN / inf ignored
    two = np.array([[0.0, 2.0], [1.0, 0.0]], np.float32)  # L-shaped union: 2 + 3 - 1
    assert float(HV(two, [True, True], ref)) == 4.0
    assert float(HV(two[::-1], [True, True], ref)) == 4.0


def test_batched_equals_loop():
    cases = _cases(12, size=5)
    pts = np.stack([c[0] for c in cases])
    mask = np.stack([c[1] for c in cases])
    ref = np.array([1.5, 1.7], np.float32)
    got = np.asarray(HV(pts, mask, ref))
    np.testing.assert_allclose(got, [brute_force_hv(p, m, ref) for p, m in zip(pts, mask,
                                                                               strict=True)],
                               rtol=1e-6, atol=1e-6)


def test_non_dominated_matches_pareto_front():
    for pts, mask, _ in _cases():
        want = pareto_front(np.where(mask, pts[:, 0], np.nan), -pts[:, 1])
        np.testing.assert_array_equal(np.asarray(ND(pts, mask)), want)


# ------------------------------------------------------------------ on search runs


@pytest.fixture(scope="module")
def small() -> Benchmark:
    reps = _cells.cell_tables().representative
    return Benchmark(bench.random_table(0, rows=reps[::8], n_seeds=2, lr_indices=[1, 3, 5],
                                        bs_indices=[0, 2, 4]))


@pytest.fixture(scope="module")
def re_runs(small):
    s = search.RegularizedEvolution()
    budget = 40 * small.mean_cost()
    traj = search.run_many(jax.random.key(0), s, (), small, budget, 4,
                           s.query_bound(small, budget))
    return traj, budget


def test_objective_bounds_and_reference_point(small):
    names = ("valid_error", "params", "flops", "train_time")
    b = hv.objective_bounds(small, names)
    acc = np.asarray(small.packed[..., -1, 0])
    cost = np.asarray(small.packed[..., -1, 4])
    covered = np.asarray(small.row_of_cell) >= 0
    params = np.asarray(small.params_of_cell)[covered]
    flops = np.asarray(small.flops_of_cell)[covered]
    np.testing.assert_allclose(b.lo, [100 - acc.max(), params.min(), flops.min(), cost.min()],
                               rtol=1e-6)
    np.testing.assert_allclose(b.hi, [100 - acc.min(), params.max(), flops.max(), cost.max()],
                               rtol=1e-6)
    np.testing.assert_allclose(hv.reference_point(small, names), b.lo + 1.1 * (b.hi - b.lo),
                               rtol=1e-6)
    np.testing.assert_allclose(b.normalise(b.hi), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="valid choices"):
        hv.objective_bounds(small, ("valid_error", "size"))


def test_trajectory_objectives(small, re_runs):
    traj, _ = re_runs
    raw, mask = hv.trajectory_objectives(traj, small, hv.OBJECTIVES)
    made = np.asarray(traj.index) >= 0
    np.testing.assert_array_equal(np.asarray(mask), made)  # RE: full queries, finite values
    idx = np.asarray(traj.index)[made]
    res = small.query(nhb2.from_index(idx), small.n_epochs)
    want = np.stack([100 - np.asarray(res.valid_acc), np.asarray(res.params),
                     np.asarray(res.flops), np.asarray(res.cost)], -1)
    np.testing.assert_allclose(np.asarray(raw)[made], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(raw)[made][:, 3], np.asarray(traj.cost)[made])


def test_hypervolume_over_time_on_runs(small, re_runs):
    traj, budget = re_runs
    times = jnp.linspace(0.0, 1.2 * budget, 25)
    for objectives in (("valid_error", "params"), ("train_time", "valid_error")):
        curve = np.asarray(hv.hypervolume_over_time(traj, small, times, objectives))
        assert curve.shape == (4, 25) and curve[:, 0].max() == 0.0
        assert (np.diff(curve, axis=-1) >= 0).all() and (curve[:, -1] > 0).all()
        assert (curve <= 1.21 + 1e-6).all()
        raw, mask = hv.trajectory_objectives(traj, small, objectives)
        pts = np.asarray(hv.objective_bounds(small, objectives).normalise(raw))
        time = np.asarray(traj.time)
        ref = np.array([1.1, 1.1])
        for r in range(4):
            for k in (5, 12, 24):
                want = brute_force_hv(pts[r], np.asarray(mask[r]) & (time[r] <= times[k]), ref)
                np.testing.assert_allclose(curve[r, k], want, rtol=1e-5, atol=1e-6)

    swapped = hv.hypervolume_over_time(traj, small, times, ["params", "valid_error"])
    np.testing.assert_allclose(swapped, hv.hypervolume_over_time(traj, small, times),
                               rtol=1e-5, atol=1e-6)
    # at the exact completion time of a query it counts: then it is the only point at first
    first = np.asarray(traj.time)[:, 0]
    at = np.asarray(hv.hypervolume_over_time(traj, small, jnp.asarray(first)))
    p0 = np.asarray(hv.objective_bounds(small).normalise(
        hv.trajectory_objectives(traj, small)[0]))[:, 0]
    np.testing.assert_allclose(np.diagonal(at), np.prod(1.1 - p0, -1), rtol=1e-5)


def test_trajectory_front(small, re_runs):
    traj, _ = re_runs
    front = np.asarray(jax.jit(hv.trajectory_front)(traj, small))
    raw, mask = (np.asarray(a) for a in hv.trajectory_objectives(traj, small))
    for r in range(4):  # error vs params: NumPy's accuracy / resources front
        want = pareto_front(np.where(mask[r], raw[r, :, 1], np.nan), 100 - raw[r, :, 0])
        np.testing.assert_array_equal(front[r], want)
        assert want.any()


def test_full_only_drops_partial_queries(small):
    s = search.Hyperband()
    budget = 30 * small.mean_cost()
    traj = search.run_many(jax.random.key(1), s, s.default_params(), small, budget, 2,
                           s.query_bound(small, budget))
    partial = (np.asarray(traj.index) >= 0) & (np.asarray(traj.epoch) < small.n_epochs)
    assert partial.any()
    _, full_mask = hv.trajectory_objectives(traj, small)
    _, all_mask = hv.trajectory_objectives(traj, small, full_only=False)
    np.testing.assert_array_equal(np.asarray(all_mask) & ~np.asarray(full_mask), partial)
    t = jnp.array([budget * 2])
    assert (np.asarray(hv.hypervolume_over_time(traj, small, t, full_only=False))
            >= np.asarray(hv.hypervolume_over_time(traj, small, t))).all()
