"""Tests for the simulated-time runner (nhb.search.runner, with nhb.search.base's helpers) and
its randomness (nhb.search.rng)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import bench, search
from nhb.bench.api import Benchmark
from nhb.search import base, rng, runner
from nhb.space import nhb2

nashpobench2api = pytest.importorskip("nashpobench2api")

BUDGET = 20000.0
RUNS = 8  # runs and trajectory lengths as in search_test.py, so the compiled programs are shared
QUERIES = {"rs": 450, "bohb": 273, "bohb_re": 1550}


@pytest.fixture(scope="module")
def table() -> bench.Table:
    return bench.random_table(7, n_seeds=1)  # all 1011 classes, one seed (fast to export)


@pytest.fixture(scope="module")
def b(table) -> Benchmark:
    return Benchmark(table)


@pytest.fixture(scope="module")
def client(table, tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    bench.export_official(table, d)
    return nashpobench2api.NASHPOBench2API(str(d), verbose=False)


def _one(traj: base.Trajectory, i: int) -> base.Trajectory:
    return jax.tree.map(lambda a: np.asarray(a)[i], traj)


@pytest.mark.parametrize("name", ["rs", "bohb", "bohb_re"])
def test_replay_through_official_client(name, b, client):
    """Times, incumbents and the final scores equal the official client's log."""
    s = search.make(name)
    q = QUERIES[name]
    trajs = search.run_many(jax.random.key(1), s, s.default_params(), b, BUDGET, RUNS, q)
    scores = jax.tree.map(np.asarray, search.score(trajs, b.best("valid", "official")[1]))
    for i in range(2):
        tr = _one(trajs, i)
        n = int(tr.n_queries)
        assert 0 < n <= q and not tr.truncated
        client.reset_logdata()
        for j in range(n):
            code, lr, bs = nhb2.to_key(nhb2.from_index(int(tr.index[j])))
            client.query_by_key(code, lr, bs, epoch=12, iepoch=int(tr.epoch[j]))
        np.testing.assert_allclose(tr.time[:n], client.total_cost_trans, rtol=1e-6)
        np.testing.assert_allclose(tr.best_valid[:n], client.best_acc_trans, rtol=1e-6)
        keys = [nhb2.to_key(nhb2.from_index(int(k))) for k in tr.best_index[:n]]
        assert keys == [(k["cellcode"], k["lr"], k["batch_size"]) for k in client.best_key_trans]
        res = client.get_results(epoch="both")
        np.testing.assert_allclose([scores.final_test[i], scores.final_200[i]],
                                   res["final_accs"], rtol=1e-6)
        if name != "bohb":  # the budget is checked before each query: the crossing one counts
            assert tr.time[n - 2] < BUDGET <= tr.time[n - 1]
        else:  # the reference's 40 iterations ignore the clock
            assert n == s.iteration_queries(40) and tr.time[n - 1] > BUDGET


def test_scan_equals_while_and_vmap_equals_single(b):
    s = search.make("reinforce")
    p = s.default_params()
    key = jax.random.key(3)
    many = search.run_many(key, s, p, b, 3000.0, 4, 48)
    scan = search.run_many(key, s, p, b, 3000.0, 4, 48, loop="scan")
    jax.tree.map(np.testing.assert_array_equal, many, scan)
    single = jax.jit(lambda k: search.run(k, s, p, b, 3000.0, 48))(rng.step_key(key, 2))
    jax.tree.map(np.testing.assert_array_equal, _one(many, 2), single)
    assert len({int(x) for x in many.index[:, 0]}) == 4  # runs differ


def test_regret_bookkeeping_and_padding(b):
    s = search.make("rs")
    tr = search.run_many(jax.random.key(4), s, (), b, 3000.0, RUNS, QUERIES["rs"])
    oracle = b.best("valid", "official")[1]
    sc = jax.tree.map(np.asarray, search.score(tr, oracle))
    tr = jax.tree.map(np.asarray, tr)
    test_acc = jax.jit(lambda i: b.query(nhb2.from_index(i), 12, mode="test").test_acc)
    for i in range(RUNS):
        n = tr.n_queries[i]
        np.testing.assert_allclose(sc.regret[i, :n], oracle - tr.best_valid[i, :n], rtol=1e-6)
        assert np.all(np.diff(sc.regret[i, :n]) <= 0) and np.all(sc.regret[i, :n] >= 0)
        assert np.all(np.maximum.accumulate(tr.valid_acc[i, :n]) == tr.best_valid[i, :n])
        assert np.all(tr.index[i, n:] == -1) and np.all(tr.time[i, n:] == tr.time[i, n - 1])
        assert np.isnan(sc.regret[i, n:]).all()
        want = test_acc(jnp.asarray(tr.best_index[i]))[:n]
        np.testing.assert_array_equal(tr.best_test[i, :n], want)
        assert np.isnan(tr.best_test[i, n:]).all()
        assert sc.final_index[i] == tr.best_index[i, n - 1]
        assert sc.final_test[i] == tr.best_test[i, n - 1]
        assert sc.final_200[i] == tr.best_200[i, n - 1]


def test_truncation_is_flagged(b):
    s = search.make("rs")
    tr = search.run_many(jax.random.key(5), s, (), b, 1e6, 2, 8)
    assert np.all(tr.truncated) and np.all(tr.n_queries == 8)


def test_nan_first_query_stays_incumbent_as_the_client():
    """The client sets its best on the first query even if NaN; NaN is never beaten."""
    t = bench.random_table(0, rows=[0])  # only the class of cell 0 is stored
    bb = Benchmark(t)
    s = search.make("rs").on(bench.SearchSpace.full())  # bound to the full space: the runner
    # does not restrict it to the table's, so it queries absent cells
    tr = jax.tree.map(np.asarray, search.run_many(jax.random.key(0), s, (), bb, 1e9, 2, 30))
    assert np.isnan(tr.valid_acc[:, 0]).all()  # absent cells: NaN, charged 0 s
    assert np.all(tr.n_queries == 30) and np.all(tr.time == 0) and tr.truncated.all()
    assert np.isnan(tr.best_valid).all() and (tr.best_index == tr.index[:, :1]).all()


def test_rng_uniforms_and_samplers():
    keys = jax.random.split(jax.random.key(0), 2000)
    u = np.asarray(jax.jit(jax.vmap(lambda k: rng.uniforms(k, 16)))(keys))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.003
    c = np.corrcoef(u[:, :8].reshape(-1), u[:, 8:].reshape(-1))[0, 1]
    assert abs(c) < 0.02
    k2 = jax.jit(jax.vmap(lambda k: rng.step_key(k, 3)))(keys)
    assert not np.array_equal(jax.random.key_data(k2), jax.random.key_data(keys))
    cfg = jax.jit(jax.vmap(lambda k: rng.sample(rng.uniforms(k, rng.N_SAMPLE))))(keys)
    counts = np.bincount(np.asarray(cfg.lr), minlength=8)
    assert counts.min() > 2000 / 8 * 0.75
    cells = np.asarray(cfg.cell).reshape(-1)
    assert np.abs(np.bincount(cells, minlength=4) / cells.size - 0.25).max() < 0.02
    logits = jnp.array([0.0, 1.0, 2.0, -1.0])
    draws = np.asarray(jax.jit(jax.vmap(
        lambda k: rng.categorical(rng.uniforms(k, 1)[0], logits)))(keys))
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / 2000,
                               jax.nn.softmax(logits), atol=0.03)


def test_clock_is_compensated():
    x = jnp.full(5000, 4.123456789, jnp.float32)

    def body(c, v):
        return base.clock_add(*c, v), None

    (hi, lo), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0)), x)
    want = 5000 * np.float64(np.float32(4.123456789))
    assert abs(float(hi) + float(lo) - want) < 1e-6 * want * 1e-3
    assert bool(base.clock_before(hi, lo, jnp.float32(want + 0.01)))


def test_put_and_pick_are_the_scatter_and_gather_they_replace():
    a = jnp.arange(24, dtype=jnp.int32).reshape(4, 6)
    v = jnp.full(6, -7, jnp.int32)
    for i in (0, 3, 4):  # 4: out of range, nothing written (as the scatter)
        np.testing.assert_array_equal(base.put(a, i, v), a.at[i].set(v, mode="drop"))
        np.testing.assert_array_equal(base.put(a, i, v, False), a)
    idx = jnp.array([0, 2, 5])
    many = jax.vmap(base.put, (None, 0, None))(a, idx, v)  # per-run indices: no scatter
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(many[k], a.at[i].set(v))
    x = jax.random.normal(jax.random.key(0), (6, 4))
    i = jnp.array([0, 3, 1, 2, 2, 0])
    np.testing.assert_array_equal(base.pick(x, i), jnp.take_along_axis(x, i[:, None], -1)[:, 0])
    g1 = jax.grad(lambda y: base.pick(y, i).sum())(x)
    g2 = jax.grad(lambda y: jnp.take_along_axis(y, i[:, None], -1).sum())(x)
    np.testing.assert_array_equal(g1, g2)


def test_compiler_options_follow_the_strategy_and_backend():
    assert search.compiler_options(search.make("rs"), "gpu") == {}
    fast = search.compiler_options(search.make("rs"), "cpu")
    if not fast:
        pytest.skip("this jaxlib lacks the XLA:CPU options")
    assert fast == runner.CPU_FAST_COMPILE_OPTIONS
    for name in ("re", "reinforce", "rs_re", "sh", "hyperband"):
        assert search.compiler_options(search.make(name), "cpu") == fast
    for name in ("bohb", "bohb_re"):  # the KDE needs optimised code
        assert search.compiler_options(search.make(name), "cpu") == runner.CPU_COMPILE_OPTIONS


# ----------------------------------------------------------------- asynchronous workers


def _batched_jit(f):
    """`f` jitted as a batch of one: the runner's vmapped programs compute BOHB's KDE in
    another order than the unbatched ones, which can flip an exact tie between candidates."""
    one = lambda x: jax.tree.map(lambda a: a[None], x)
    return jax.jit(lambda *a: jax.tree.map(lambda x: x[0], jax.vmap(f)(*one(a))))


def event_loop(key: jax.Array, s: search.Strategy, p, b: Benchmark, budget: float, q: int,
               n_workers: int) -> dict:
    """The reference simulation: a Python event loop over a heap of running queries (float64
    clock), asking the jitted strategy one query at a time whenever a worker is free."""
    import heapq
    import math

    s = s.on(b.space) if s.space is None else s
    ask = _batched_jit(lambda k, st: s.ask(k, st, p))
    tell = _batched_jit(lambda st, c, f, cost: s.tell(st, c, f, p, cost))
    flags = _batched_jit(lambda st: (s.unchecked(st, p), s.done(st, p), s.ready(st, p)))
    query = jax.jit(lambda c, e: b.query(c, e, mode="valid"))
    st = s.init(rng.step_key(key, 0xFFFFFFFF), p)
    clock, d, free, running = 0.0, 0, n_workers, []
    log = dict(time=[], epoch=[], index=[], best_index=[], max_running=0)

    def fill():
        nonlocal st, d, free
        while free and d < q:
            unchecked, done, ready = (bool(x) for x in flags(st))
            if not ((clock < budget or unchecked) and not done and ready):
                break
            cfg, epoch, st = ask(rng.step_key(key, d), st)
            res = query(cfg, epoch)
            cost = float(res.cost)
            heapq.heappush(running, (clock + (cost if math.isfinite(cost) else 0.0), d, cfg,
                                     int(epoch), float(res.valid_acc), cost))
            d, free = d + 1, free - 1
        log["max_running"] = max(log["max_running"], len(running))

    fill()
    best = best_index = None
    while running:
        clock, _, cfg, epoch, acc, cost = heapq.heappop(running)
        free += 1
        st = tell(st, cfg, jnp.float32(acc), jnp.float32(cost))
        index = int(nhb2.to_index(cfg))
        if best is None or acc > best:
            best, best_index = acc, index
        for k, v in (("time", clock), ("epoch", epoch), ("index", index),
                     ("best_index", best_index)):
            log[k].append(v)
        fill()
    return log


@pytest.mark.parametrize("name,n_workers", [("rs", 1), ("rs", 4), ("re", 4),
                                            ("hyperband", 4), ("bohb", 4), ("bohb_re", 3)])
def test_workers_equal_a_python_event_loop(name, n_workers, b):
    """Each run's trajectory (completion order, finish times, epochs, incumbents) equals the
    event loop's; N workers keep up to N queries running and make about N times as many."""
    s = search.make(name)
    if isinstance(s, search.Sequential):
        s = dataclasses.replace(s, hpo_budget=1500.0)
    p = s.default_params()
    budget, q = 6000.0, 400
    key = jax.random.key(11)
    trajs = jax.tree.map(np.asarray, search.run_many(key, s, p, b, budget, 2, q,
                                                     n_workers=n_workers))
    seq = np.asarray(search.run_many(key, s, p, b, budget, 2, q).n_queries)
    for i in range(2):
        ref = event_loop(rng.step_key(key, i), s, p, b, budget, q, n_workers)
        tr, n = _one(trajs, i), len(ref["index"])
        assert int(tr.n_queries) == n and not tr.truncated
        np.testing.assert_array_equal(tr.index[:n], ref["index"])
        np.testing.assert_array_equal(tr.epoch[:n], ref["epoch"])
        np.testing.assert_array_equal(tr.best_index[:n], ref["best_index"])
        np.testing.assert_allclose(tr.time[:n], ref["time"], rtol=1e-6)
        assert np.all(np.diff(tr.time[:n]) >= 0)
        assert ref["max_running"] == n_workers
        if name in ("rs", "re"):  # budget-bound: about N times the queries
            assert n >= 0.7 * n_workers * seq[i]


def test_workers_hyperband_keeps_its_stages_and_ties_finish_in_dispatch_order():
    """Every query costs 10 s per epoch, so queries of one stage finish together: the ties
    complete in dispatch order (as the event loop), and synchronous Hyperband with 4 workers
    asks exactly the sequential run's queries (its promotions wait for the stage's results)."""
    t = bench.random_table(3, n_seeds=1)
    metrics = dict(t.metrics, train_time=np.full_like(t.metrics["train_time"], 10.0),
                   valid_time=np.zeros_like(t.metrics["valid_time"]))
    b = Benchmark(dataclasses.replace(t, metrics=metrics))
    s = search.Hyperband(n_iterations=4)
    key = jax.random.key(2)
    q = s.iteration_queries(4)
    one, four = (jax.tree.map(np.asarray, search.run_many(key, s, (), b, 0.0, 1, q,
                                                          n_workers=w)) for w in (1, 4))
    assert int(one.n_queries[0]) == int(four.n_queries[0]) == q
    pairs = lambda tr: sorted(zip(tr.index[0], tr.epoch[0], strict=True))
    assert pairs(one) == pairs(four)
    # brackets 9-3-1 at 1/4/12 epochs, 3-1 at 4/12, 3 at 12, 9-3-1: 330 + 240 + 360 + 330 s
    # in sequence; on 4 workers a stage of n takes ceil(n / 4) rounds: 190 + 160 + 120 + 190
    assert (one.time[0, -1], four.time[0, -1]) == (1260.0, 660.0)
    ref = event_loop(rng.step_key(key, 0), s, (), b, 0.0, q, 4)
    np.testing.assert_array_equal(four.index[0], ref["index"])
    np.testing.assert_array_equal(four.time[0], ref["time"])


@dataclasses.dataclass(frozen=True)
class _Scripted(search.Strategy):
    """Asks the configs of `lrs` in order (cell 0, batch size 0) at the full epoch."""

    lrs: tuple[int, ...] = ()
    space: bench.SearchSpace | None = None

    def init(self, key, params):
        return jnp.zeros((), jnp.int32)

    def ask(self, key, state, params):
        lr = jnp.asarray(self.lrs)[jnp.minimum(state, len(self.lrs) - 1)]
        return nhb2.make(jnp.zeros(6, jnp.int8), lr, 0), jnp.int32(self.full_epoch), state + 1

    def tell(self, state, cfg, fitness, params, cost=0.0):
        return state

    def done(self, state, params):
        return state >= len(self.lrs)


def test_a_tie_completes_the_first_dispatched_not_the_first_worker():
    """Queries cost 10 s at lr index 0 and 20 s at 1. With 2 workers, query 0 (10 s, worker 0)
    and 1 (20 s, worker 1) start at 0; query 2 (10 s) takes worker 0 at 10 s, so queries 1
    and 2 both finish at 20 s: the first dispatched (1, on worker 1) completes first."""
    t = bench.random_table(0, rows=[0], n_seeds=1, lr_indices=[0, 1], bs_indices=[0])
    per_epoch = np.where(np.arange(2) == 0, 10.0, 20.0)[None, :, None, None, None] / 12
    train = np.broadcast_to(per_epoch, t.metrics["train_time"].shape).astype(np.float32)
    b = Benchmark(dataclasses.replace(t, metrics=dict(
        t.metrics, train_time=train, valid_time=np.zeros_like(train))))
    s = _Scripted(lrs=(0, 1, 0, 1))
    tr = jax.tree.map(np.asarray, search.run_many(jax.random.key(0), s, (), b, 1e9, 1, 8,
                                                  n_workers=2))
    n = int(tr.n_queries[0])
    lr_of = [int(nhb2.from_index(int(i)).lr) for i in tr.index[0, :n]]
    np.testing.assert_allclose(tr.time[0, :n], [10, 20, 20, 40], rtol=1e-6)
    assert lr_of == [0, 1, 0, 1]  # query 1 (lr 1) before query 2 (lr 0) at 20 s
    ref = event_loop(jax.random.key(0), s, (), b, 1e9, 8, 2)
    np.testing.assert_array_equal(tr.index[0, :n], ref["index"])


def test_random_seed_mode_draws_each_querys_seed_from_its_dispatch_key():
    """seed="random": query d reads the seed drawn by step_key(step_key(run key, d), 1)."""
    t = bench.random_table(5, rows=list(range(0, 1011, 50)), n_seeds=3)
    b = Benchmark(t)
    s = search.make("rs")
    key = jax.random.key(4)
    tr = jax.tree.map(np.asarray, search.run_many(key, s, (), b, 5000.0, 1, 60, "random"))
    n, k = int(tr.n_queries[0]), rng.step_key(key, 0)
    cfg = nhb2.from_index(jnp.asarray(tr.index[0, :n]))
    keys = [rng.step_key(rng.step_key(k, d), 1) for d in range(n)]
    want = [float(b.query(jax.tree.map(lambda a, d=d: a[d], cfg), int(tr.epoch[0, d]),
                          seed="random", key=keys[d]).valid_acc) for d in range(n)]
    np.testing.assert_array_equal(tr.valid_acc[0, :n], want)
    official = np.asarray(b.query(cfg, 12).valid_acc)
    assert n > 5 and np.mean(official != tr.valid_acc[0, :n]) > 0.3
