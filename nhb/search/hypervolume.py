"""Multi-objective NAS-HPO-Bench-II: objectives per query, their scale, and the hypervolume.

Objectives (`OBJECTIVES`, all MINIMISED), per query of config c at epoch e:

- "valid_error": 100 - the validation accuracy (%) returned by the query;
- "params": trainable parameters of c's cell network (`Benchmark.params_of_cell`, see
  `nhb.bench.objectives`; the table's network scale);
- "flops": its multiply-accumulates per image (`Benchmark.flops_of_cell`);
- "train_time": the seconds the query charged (`Trajectory.cost`: training and validation
  passes up to epoch e, as the official client charges a 'valid' query).

Scale (ASSUMPTION, our choice): each objective is min-max normalised over the table's space,
f~ = (f - lo) / (hi - lo), with lo / hi the best / worst value any stored full query can give:
valid_error and train_time over every stored (row, lr, bs, seed) at the last epoch, params and
flops over every covered cell (`ObjectiveBounds`, `objective_bounds`). Linear rather than log
scale because parameters and FLOPs are affine in the number of conv edges, so the normalised
size is the same at every network scale (and the strategies' own min-max normalisation,
`nhb.search.mo_evolution`, is invariant to it); min-max because the objectives have unrelated
units, and it makes the hypervolume a share of the unit box, comparable across objective pairs.
The reference point is 1 + `REF_MARGIN` (1.1) in every normalised objective, i.e. the worst
value in the table's space plus 10 % of its range (the common choice; Ishibuchi et al. 2018,
"How to specify a reference point in hypervolume calculation"): every stored full query lies
inside it, so every such point counts, and since it depends only on the table, hypervolumes of
methods on one table are comparable. `reference_point` gives it in raw units.

Hypervolumes: `hypervolume_2d` is the exact dominated area of a masked point set (sort-based,
O(P log P)); `hypervolume_over_time` that of every run's queries completed by each time (by
default full queries only: a partial query's error is a snapshot of an unfinished schedule and
its cost a fraction of the config's training time, so it does not measure the config's
objectives); `non_dominated` marks a run's Pareto-optimal queries (for plots). All are
jittable and take any leading batch axes (e.g. `run_many`'s runs axis).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from nhb.bench.api import FIELDS, Benchmark
from nhb.search.base import Trajectory
from nhb.space import nhb2

OBJECTIVES = ("valid_error", "params", "flops", "train_time")
DEFAULT_OBJECTIVES = ("valid_error", "params")
REF_MARGIN = 0.1  # reference point: worst value of the space + 10 % of the range
_TIME_BATCH = 16  # times evaluated together by `hypervolume_over_time` (bounds its memory)


def check_objectives(objectives: Sequence[str] | str,
                     n: int | None = None) -> tuple[str, ...]:
    """The objective names (a sequence or a comma-separated string) as a tuple, checked
    (known, distinct; `n` of them if given)."""
    if isinstance(objectives, str):
        objectives = [o.strip() for o in objectives.split(",") if o.strip()]
    names = tuple(objectives)
    bad = [o for o in names if o not in OBJECTIVES]
    if bad or len(set(names)) != len(names) or not names or (n is not None and len(names) != n):
        want = f"{n} distinct" if n else "distinct"
        raise ValueError(f"objectives {names!r} are invalid; valid choices: {want} names of "
                         f"{list(OBJECTIVES)}")
    return names


def query_objectives(objectives: Sequence[str], valid_acc: jax.Array, cell: jax.Array,
                     cost: jax.Array, params_of_cell: jax.Array,
                     flops_of_cell: jax.Array) -> jax.Array:
    """Raw objective values of queries (jittable; shared by the scoring and the strategies).

    Args:
        objectives: names from `OBJECTIVES` (static).
        valid_acc: float [...] validation accuracy (%) returned.
        cell: int [...] cell index (0..4095) of the queried config.
        cost: float [...] seconds the query charged.
        params_of_cell: [4096] parameter count per cell (any affine rescaling works).
        flops_of_cell: [4096] MACs per cell.

    Returns:
        float32 [..., m] in `objectives` order (NaN where the accuracy or cost is NaN).
    """
    f32 = jnp.float32
    values = {"valid_error": lambda: 100.0 - jnp.asarray(valid_acc, f32),
              "params": lambda: jnp.asarray(params_of_cell, f32)[cell],
              "flops": lambda: jnp.asarray(flops_of_cell, f32)[cell],
              "train_time": lambda: jnp.asarray(cost, f32)}
    return jnp.stack([values[o]() for o in check_objectives(objectives)], -1)


@struct.dataclass
class ObjectiveBounds:
    """Best (`lo`) and worst (`hi`) raw value of each objective in a table's space.

    Attributes:
        lo: float32 [m].
        hi: float32 [m].
        objectives: the names (static).
    """

    lo: jax.Array
    hi: jax.Array
    objectives: tuple[str, ...] = struct.field(pytree_node=False)

    def normalise(self, raw: jax.Array) -> jax.Array:
        """(raw - lo) / (hi - lo) over the last axis (a zero range counts as 1)."""
        span = self.hi - self.lo
        return (raw - self.lo) / jnp.where(span > 0, span, 1.0)

    def reference_point(self, margin: float = REF_MARGIN) -> jax.Array:
        """The reference point in raw units: lo + (1 + margin) (hi - lo)."""
        span = self.hi - self.lo
        return self.lo + (1.0 + margin) * jnp.where(span > 0, span, 1.0)


def objective_bounds(bench: Benchmark,
                     objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> ObjectiveBounds:
    """The objectives' range over the table's space (see the module docstring; jittable).

    Args:
        bench: the benchmark.
        objectives: names from `OBJECTIVES`.

    Returns:
        `ObjectiveBounds`: valid_error / train_time over all stored full queries (every seed),
        params / flops over the covered cells.
    """
    full = bench.packed[..., bench.n_epochs - 1, :]  # [rows, lrs, bss, seeds, fields]
    covered = bench.row_of_cell >= 0
    f32 = jnp.float32

    def over_cells(table: jax.Array) -> tuple[jax.Array, jax.Array]:
        t = table.astype(f32)
        return (jnp.min(jnp.where(covered, t, jnp.inf)),
                jnp.max(jnp.where(covered, t, -jnp.inf)))

    def over_queries(a: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jnp.nanmin(a), jnp.nanmax(a)

    pairs = {"valid_error": lambda: over_queries(100.0 - full[..., FIELDS.index("valid_acc")]),
             "train_time": lambda: over_queries(full[..., FIELDS.index("cost_valid")]),
             "params": lambda: over_cells(bench.params_of_cell),
             "flops": lambda: over_cells(bench.flops_of_cell)}
    names = check_objectives(objectives)
    lo, hi = zip(*(pairs[o]() for o in names), strict=True)
    return ObjectiveBounds(lo=jnp.stack(lo).astype(f32), hi=jnp.stack(hi).astype(f32),
                           objectives=names)


def reference_point(bench: Benchmark,
                    objectives: Sequence[str] = DEFAULT_OBJECTIVES) -> jax.Array:
    """The default reference point of `objectives` on the table, in raw units (float32 [m]):
    the worst value of the space plus `REF_MARGIN` of its range."""
    return objective_bounds(bench, objectives).reference_point()


def trajectory_objectives(traj: Trajectory, bench: Benchmark,
                          objectives: Sequence[str] = DEFAULT_OBJECTIVES,
                          full_only: bool = True) -> tuple[jax.Array, jax.Array]:
    """Raw objectives of every query of trajectories, and which queries count.

    Args:
        traj: `Trajectory` (any leading batch axes, queries last).
        bench: the benchmark it ran on (params / flops of the table's scale).
        objectives: names from `OBJECTIVES` (static).
        full_only: count only queries at the table's last epoch (static).

    Returns:
        (float32 [..., Q, m] objectives, bool [..., Q] mask: a made query (not padding),
        at the last epoch if `full_only`, with finite objectives).
    """
    index = jnp.asarray(traj.index)
    cell = jnp.maximum(index, 0) // nhb2.NUM_HPS
    raw = query_objectives(objectives, traj.valid_acc, cell, traj.cost, bench.params_of_cell,
                           bench.flops_of_cell)
    mask = (index >= 0) & jnp.all(jnp.isfinite(raw), -1)
    if full_only:
        mask = mask & (jnp.asarray(traj.epoch) == bench.n_epochs)
    return raw, mask


def _sweep(xs: jax.Array, ys: jax.Array, ref: jax.Array) -> jax.Array:
    """Area dominated by points sorted by increasing x (points that are not inside the
    reference box must sit at the reference point): sum over i of (x[i+1] - x[i]) times
    (ref_y - min(y[:i+1])), with x[P] = ref_x."""
    nxt = jnp.concatenate([xs[..., 1:], jnp.broadcast_to(ref[0], xs[..., :1].shape)], -1)
    low = jax.lax.cummin(ys, axis=ys.ndim - 1)
    return jnp.sum((nxt - xs) * (ref[1] - low), -1)


def _inside(points: jax.Array, mask: jax.Array, ref: jax.Array) -> jax.Array:
    """Masked points strictly better than `ref` in both objectives (non-finite: False)."""
    ok = jnp.all(jnp.isfinite(points), -1) & jnp.all(points < ref, -1)
    return ok & jnp.asarray(mask, bool)


def hypervolume_2d(points: jax.Array, mask: jax.Array, ref: jax.Array) -> jax.Array:
    """Exact hypervolume (area) dominated by masked 2-objective points, both minimised.

    Points that are masked out, have a non-finite coordinate, or are not strictly better than
    `ref` in both objectives contribute nothing. Sort-based, O(P log P); jittable, and
    batched over leading axes.

    Args:
        points: float [..., P, 2].
        mask: bool [..., P].
        ref: float [2] reference point.

    Returns:
        float [...] the area of the union of the boxes [p, ref] (0 for no point).
    """
    points = jnp.asarray(points)
    ref = jnp.asarray(ref, points.dtype)
    ok = _inside(points, mask, ref)
    p = jnp.where(ok[..., None], points, ref)
    order = jnp.argsort(p[..., 0], axis=-1)
    xs = jnp.take_along_axis(p[..., 0], order, -1)
    ys = jnp.take_along_axis(p[..., 1], order, -1)
    return _sweep(xs, ys, ref)


def hypervolume_over_time(traj: Trajectory, bench: Benchmark, times: jax.Array,
                          objectives: Sequence[str] = DEFAULT_OBJECTIVES,
                          full_only: bool = True) -> jax.Array:
    """Normalised hypervolume of each run's queries completed by each time (jitted).

    Args:
        traj: `Trajectory` (any leading batch axes; NumPy arrays work too).
        bench: the benchmark the runs used.
        times: float [T] simulated seconds; a query counts at time t if its `traj.time`
            (the clock after it) is <= t.
        objectives: two names from `OBJECTIVES` (the first on the sweep's x axis; the
            hypervolume does not depend on the order).
        full_only: count only full (last-epoch) queries (see the module docstring).

    Returns:
        float32 [..., T] hypervolume of the min-max normalised objectives (`objective_bounds`)
        w.r.t. the reference point (1.1, 1.1); at most 1.21, non-decreasing in t.
    """
    return _hypervolume_over_time(traj, bench, times, check_objectives(objectives, 2),
                                  bool(full_only))


@functools.partial(jax.jit, static_argnames=("objectives", "full_only"))
def _hypervolume_over_time(traj: Trajectory, bench: Benchmark, times: jax.Array,
                           objectives: tuple[str, ...], full_only: bool) -> jax.Array:
    raw, mask = trajectory_objectives(traj, bench, objectives, full_only)
    pts = objective_bounds(bench, objectives).normalise(raw)
    ref = jnp.full(2, 1.0 + REF_MARGIN, jnp.float32)
    ok = _inside(pts, mask, ref)
    p = jnp.where(ok[..., None], pts, ref)
    order = jnp.argsort(p[..., 0], axis=-1)  # sorted once; later queries are masked per time
    xs = jnp.take_along_axis(p[..., 0], order, -1)
    ys = jnp.take_along_axis(p[..., 1], order, -1)
    done = jnp.take_along_axis(jnp.asarray(traj.time), order, -1)

    def at(t: jax.Array) -> jax.Array:
        # a point moved to (x, ref_y) only splits an interval of the sweep: no area added
        return _sweep(xs, jnp.where(done <= t, ys, ref[1]), ref)

    hv = jax.lax.map(at, jnp.asarray(times, done.dtype).reshape(-1), batch_size=_TIME_BATCH)
    return jnp.moveaxis(hv, 0, -1)


def non_dominated(points: jax.Array, mask: jax.Array) -> jax.Array:
    """Which masked 2-objective points (both minimised) no other masked point dominates.

    Same rules as `nhb.search.selection.pareto_front` / `nhb.search.mobo.non_dominated`: a
    point dominates another when it is <= in both objectives and < in one; equal points are
    all kept; masked-out and non-finite points are never on the front and dominate nothing.
    Sort-based, O(P log P); jittable, batched over leading axes.

    Args:
        points: float [..., P, 2].
        mask: bool [..., P].

    Returns:
        bool [..., P].
    """
    points = jnp.asarray(points)
    ok = jnp.asarray(mask, bool) & jnp.all(jnp.isfinite(points), -1)
    p = jnp.where(ok[..., None], points, jnp.inf)
    order = jnp.lexsort((p[..., 1], p[..., 0]), axis=-1)  # x, then y, increasing
    xs = jnp.take_along_axis(p[..., 0], order, -1)
    ys = jnp.take_along_axis(p[..., 1], order, -1)
    n = xs.shape[-1]
    inf = jnp.full(ys[..., :1].shape, jnp.inf, ys.dtype)
    before = jax.lax.cummin(jnp.concatenate([inf, ys[..., :-1]], -1), axis=ys.ndim - 1)
    # points lexicographically before i, excluding its equals (the start of its run of equals)
    new = jnp.concatenate([jnp.ones(xs[..., :1].shape, bool),
                           (xs[..., 1:] != xs[..., :-1]) | (ys[..., 1:] != ys[..., :-1])], -1)
    start = jax.lax.cummax(jnp.where(new, jnp.arange(n), 0), axis=xs.ndim - 1)
    nd_sorted = jnp.take_along_axis(before, start, -1) > ys
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(nd_sorted, inverse, -1) & ok


def trajectory_front(traj: Trajectory, bench: Benchmark,
                     objectives: tuple[str, str] = DEFAULT_OBJECTIVES,
                     full_only: bool = True) -> jax.Array:
    """The Pareto-optimal queries of runs (all queries made; for plots), jittable with
    `objectives` and `full_only` static.

    Args:
        traj: `Trajectory` (any leading batch axes).
        bench: the benchmark.
        objectives: two names from `OBJECTIVES`.
        full_only: consider only full (last-epoch) queries.

    Returns:
        bool [..., Q]: the query is non-dominated among the run's counted queries
        (`np.flatnonzero` gives the indices of one run's front).
    """
    raw, mask = trajectory_objectives(traj, bench, check_objectives(objectives, 2), full_only)
    return non_dominated(raw, mask)
