"""Tests for nhb.bench.api: values and costs equal to the official client, errors, oracle."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nhb import bench
from nhb.bench.api import Benchmark
from nhb.space import cells, nhb2

nashpobench2api = pytest.importorskip("nashpobench2api")


@pytest.fixture(scope="module")
def table() -> bench.Table:
    """30 classes, 3 seeds; the official totals are stored and differ from the epoch sums."""
    t = cells.cell_tables()
    tb = bench.random_table(3, rows=t.representative[::34][:30], diverged_fraction=0.05)
    rng = np.random.default_rng(0)
    tr, va, te = (tb.metrics[f"{s}_time"].astype(np.float64).sum(-1) for s in
                  ("train", "valid", "test"))
    jitter = lambda: rng.uniform(0.9, 1.1, tr.shape)
    extra = dict(tb.extra, total_train_time=tr * jitter(), total_trainval_time=(tr + va) *
                 jitter(), total_test_time=te * jitter())
    return dataclasses.replace(tb, extra=extra)


@pytest.fixture(scope="module")
def client(table, tmp_path_factory):
    d = tmp_path_factory.mktemp("official")
    bench.export_official(table, d)
    return nashpobench2api.NASHPOBench2API(str(d), verbose=False)


@pytest.fixture(scope="module")
def b(table) -> Benchmark:
    return Benchmark(table)


def _stored_configs(table: bench.Table, n: int, seed: int) -> nhb2.Config:
    """n random configs whose cells (any member of a stored class) are in the table."""
    t = cells.cell_tables()
    rng = np.random.default_rng(seed)
    stored = np.nonzero(table.row_of_cell >= 0)[0]
    cell = rng.choice(stored, n)
    assert (t.class_id[cell] >= 0).all()
    return nhb2.make(nhb2.cell_from_index(cell), rng.integers(0, 8, n), rng.integers(0, 6, n))


@pytest.mark.parametrize("mode", ["valid", "test"])
def test_values_and_costs_equal_official_client(table, client, b, mode):
    cfg = _stored_configs(table, 300, 1)
    epochs = np.random.default_rng(2).integers(1, 13, 300)
    epochs[:40] = 12
    query = jax.jit(lambda c, e: b.query(c, e, mode=mode))
    res = jax.tree.map(np.asarray, query(cfg, jnp.asarray(epochs)))
    for i, (code, lr, bs) in enumerate(nhb2.to_keys(cfg)):
        acc, cost = client.query_by_key(code, lr, bs, epoch=12, mode=mode, iepoch=int(epochs[i]))
        got = res.valid_acc[i] if mode == "valid" else res.test_acc[i]
        np.testing.assert_allclose(got, acc, rtol=1e-6)
        np.testing.assert_allclose(res.cost[i], cost, rtol=1e-6)
    assert np.all(np.isfinite(res.cost))


def test_other_seed_and_200_epochs_equal_client(table, client, b):
    cfg = _stored_configs(table, 50, 3)
    client.set_seed(555)
    res = jax.jit(lambda c: b.query(c, 12, seed=1))(cfg)
    res200 = jax.jit(lambda c: b.query(c, 200))(cfg)
    for i, (code, lr, bs) in enumerate(nhb2.to_keys(cfg)):
        acc, cost = client.query_by_key(code, lr, bs)
        np.testing.assert_allclose(res.valid_acc[i], acc, rtol=1e-6)
        np.testing.assert_allclose(res.cost[i], cost, rtol=1e-6)
        a200, c200 = client.query_by_key(code, lr, bs, epoch=200)
        np.testing.assert_allclose(res200.test_acc[i], a200, rtol=1e-6)
        assert c200 is None and res200.cost[i] == 0
    client.set_seed(222)


def test_full_query_uses_stored_totals(table, b):
    cfg = _stored_configs(table, 20, 4)
    rows = table.row_of_cell[np.asarray(nhb2.cell_index(cfg.cell))]
    lr, bs = np.asarray(cfg.lr), np.asarray(cfg.bs)
    tv = table.extra["total_trainval_time"][rows, lr, bs, 0]
    te = table.extra["total_test_time"][rows, lr, bs, 0]
    np.testing.assert_allclose(b.query(cfg, 12).cost, tv, rtol=1e-6)
    np.testing.assert_allclose(b.query(cfg, 12, mode="test").cost, tv + te, rtol=1e-6)
    m = table.metrics
    part = (m["train_time"][rows, lr, bs, 0, :5].astype(np.float64).sum(-1)
            + m["valid_time"][rows, lr, bs, 0, :5].sum(-1))
    np.testing.assert_allclose(b.query(cfg, 5).cost, part, rtol=1e-6)


def test_mean_and_random_seed(table, b):
    cfg = _stored_configs(table, 64, 5)
    rows = table.row_of_cell[np.asarray(nhb2.cell_index(cfg.cell))]
    want = np.nanmean(table.metrics["test_acc"][rows, np.asarray(cfg.lr), np.asarray(cfg.bs),
                                                 :, 3], -1)
    np.testing.assert_allclose(b.query(cfg, 4, seed="mean").test_acc, want, rtol=1e-5)
    r = jax.jit(lambda c, k: b.query(c, 12, seed="random", key=k))(cfg, jax.random.key(0))
    per_seed = np.stack([np.asarray(b.query(cfg, 12, seed=s).valid_acc) for s in range(3)], -1)
    assert np.all(np.any(np.asarray(r.valid_acc)[:, None] == per_seed, -1))
    assert len({int(np.argmax(np.asarray(r.valid_acc)[:, None] == per_seed, -1)[i])
                for i in range(64)}) == 3


def test_cells_missing_from_table(b, table):
    absent = int(np.nonzero(table.row_of_cell < 0)[0][0])
    cfg = nhb2.make(nhb2.cell_from_index(np.array([absent, table.cells[0]])), [0, 1], [2, 3])
    with pytest.raises(ValueError, match="not in this table"):
        b.query(cfg)
    res = jax.jit(lambda c: b.query(c))(cfg)
    assert np.isnan(res.valid_acc[0]) and np.isnan(res.cost[0]) and np.isfinite(res.cost[1])


def test_errors_name_the_choices(b):
    cfg = nhb2.make(nhb2.cell_from_index(np.asarray(b.cells[:1])), [0], [0])
    with pytest.raises(ValueError, match=r"\['valid', 'test'\]"):
        b.query(cfg, mode="train")
    with pytest.raises(ValueError, match="official"):
        b.query(cfg, seed="first")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        b.query(cfg, seed=3)
    with pytest.raises(ValueError, match="PRNG key"):
        b.query(cfg, seed="random")
    with pytest.raises(ValueError, match=r"1\.\.12"):
        b.query(cfg, epoch=13)
    with pytest.raises(ValueError, match="valid choices"):
        b.best("train")


def test_best_is_the_argmax(table, b):
    cfg, v = b.best("valid", "mean")
    score = table.seed_mean("valid_acc")
    assert v == pytest.approx(float(np.nanmax(score)))
    np.testing.assert_allclose(b.query(cfg, seed="mean").valid_acc, v, rtol=1e-6)
    cfg, v = b.best("test", "official")
    assert v == pytest.approx(float(np.nanmax(table.metrics["test_acc"][..., 0, -1])))
    cfg, v = b.best("200")
    assert v == pytest.approx(float(np.nanmax(table.extra["avg_acc_200"])))


def test_surrogate_overrides_200_epoch_values(table):
    class Fake:
        def predict(self, cfg):
            return 50.0 + nhb2.cell_index(cfg.cell) % 7 + cfg.lr * 2.0 + cfg.bs

    b = Benchmark(table, surrogate=Fake(), chunk=1000)
    cfg = _stored_configs(table, 30, 6)
    rows = table.row_of_cell[np.asarray(nhb2.cell_index(cfg.cell))]
    want = 50.0 + table.cells[rows] % 7 + np.asarray(cfg.lr) * 2.0 + np.asarray(cfg.bs)
    np.testing.assert_allclose(b.acc200(cfg), want, rtol=1e-6)
    assert b.has_200
    no200 = Benchmark(dataclasses.replace(table, extra={}))
    assert not no200.has_200 and np.isnan(no200.acc200(cfg)).all()


# ----------------------------------------------------------------------------- sub-grids

LR_SUB, BS_SUB = [1, 4, 6], [0, 3]


@pytest.fixture(scope="module")
def sub(table) -> bench.Table:
    return bench.fake.sub_grid(table, LR_SUB, BS_SUB)


def _sub_configs(table: bench.Table, n: int, seed: int) -> nhb2.Config:
    cfg = _stored_configs(table, n, seed)
    rng = np.random.default_rng(seed)
    return cfg.replace(lr=jnp.asarray(rng.choice(LR_SUB, n), jnp.int32),
                       bs=jnp.asarray(rng.choice(BS_SUB, n), jnp.int32))


def test_sub_grid_queries_equal_the_full_tables(table, sub, b):
    s = Benchmark(sub)
    assert s.space.lrs == tuple(LR_SUB) and s.space.bss == tuple(BS_SUB)
    assert not s.space.is_full and b.space.is_full is False  # 30 of 1011 classes
    assert s.space.n_configs == s.space.n_cells * 6 and s.space.n_distinct == 30 * 6
    cfg = _sub_configs(table, 200, 7)
    epochs = jnp.asarray(np.random.default_rng(8).integers(1, 13, 200))
    for kw in (dict(mode="valid"), dict(mode="test"), dict(seed=2), dict(seed="mean")):
        q = jax.jit(lambda bb, c, e, kw=kw: bb.query(c, e, **kw))
        jax.tree.map(np.testing.assert_array_equal, q(s, cfg, epochs), q(b, cfg, epochs))
    q200 = jax.jit(lambda bb, c: bb.query(c, 200))
    jax.tree.map(np.testing.assert_array_equal, q200(s, cfg), q200(b, cfg))
    want = table.extra["avg_acc_200"][table.row_of_cell[np.asarray(nhb2.cell_index(cfg.cell))],
                                      np.asarray(cfg.lr), np.asarray(cfg.bs)]
    np.testing.assert_array_equal(q200(s, cfg).test_acc, want)


def test_sub_grid_absent_hyperparameters(table, sub):
    s = Benchmark(sub)
    cfg = _sub_configs(table, 3, 9)
    cfg = cfg.replace(lr=cfg.lr.at[1].set(7), bs=cfg.bs.at[2].set(5))
    with pytest.raises(ValueError, match=r"learning rate 0\.4 \(index 7\) is not in this table, "
                                         r"which holds \[0\.00625, 0\.05, 0\.2\]"):
        s.query(cfg)
    with pytest.raises(ValueError, match=r"batch size 512 \(index 5\).*\[16, 128\]"):
        s.query(cfg.replace(lr=cfg.lr.at[1].set(1)))
    res = jax.jit(lambda bb, c: bb.query(c))(s, cfg)
    assert np.isfinite(res.cost[0]) and np.isnan(res.valid_acc[1:]).all()
    assert np.isnan(res.cost[1:]).all() and np.isnan(jax.jit(s.acc200)(cfg)[1:]).all()


def test_sub_grid_oracle_costs_and_surrogate(table, sub):
    s = Benchmark(sub)
    valid = table.seed_mean("valid_acc")[:, LR_SUB][:, :, BS_SUB]
    r, i, j = np.unravel_index(int(np.nanargmax(valid)), valid.shape)
    cfg, v = s.best("valid", "mean")
    assert v == pytest.approx(float(valid[r, i, j]))
    assert (int(cfg.lr), int(cfg.bs)) == (LR_SUB[i], BS_SUB[j])
    assert int(nhb2.cell_index(cfg.cell)) == int(table.cells[r])
    tv = table.extra["total_trainval_time"][:, LR_SUB][:, :, BS_SUB, 0]
    assert s.min_cost() == pytest.approx(float(tv.min()), rel=1e-6)
    assert s.mean_cost() == pytest.approx(float(tv.mean()), rel=1e-6)

    class Fake:
        def predict(self, cfg):
            return 50.0 + cfg.lr * 2.0 + cfg.bs

    sg = Benchmark(sub, surrogate=Fake(), chunk=7)
    assert sg.acc_200.shape == (30, 3, 2)
    q = _sub_configs(table, 20, 10)
    np.testing.assert_allclose(sg.acc200(q), 50.0 + np.asarray(q.lr) * 2.0 + np.asarray(q.bs))


def test_build_directory_loads(sub, tmp_path):
    bench.save_table(sub, tmp_path / bench.TABLE_FILE)
    s = Benchmark(tmp_path)  # a build directory: its table.nhb
    assert s.space == Benchmark(sub).space and s.packed.shape[1:3] == (3, 2)


def test_tables_of_other_lengths_default_to_their_last_epoch():
    t = bench.random_table(2, rows=[0, 5], n_seeds=1, n_epochs=3, lr_indices=[0], bs_indices=[1])
    s = Benchmark(t)
    assert s.n_epochs == 3 and s.space.n_epochs == 3 and "3 epochs" in s.space.describe()
    cfg = nhb2.make(nhb2.cell_from_index(np.array([0, 5])), [0, 0], [1, 1])
    res = jax.jit(lambda bb, c: bb.query(c))(s, cfg)
    np.testing.assert_array_equal(res.valid_acc, t.metrics["valid_acc"][:, 0, 0, 0, 2])
    cost = (t.metrics["train_time"][:, 0, 0, 0].astype(np.float64).sum(-1)
            + t.metrics["valid_time"][:, 0, 0, 0].sum(-1))
    np.testing.assert_allclose(res.cost, cost, rtol=1e-6)
    assert s.min_cost() == pytest.approx(float(cost.min()), rel=1e-6)
    assert s.best("valid", "official")[1] == pytest.approx(
        float(t.metrics["valid_acc"][:, 0, 0, 0, 2].max()))
    with pytest.raises(ValueError, match=r"integers 1\.\.3"):
        s.query(cfg, 12)


def test_unsorted_table_axes(table, sub, b):
    """A table whose lr / bs axes are not increasing answers the same as the sorted one."""
    rev = bench.fake.sub_grid(sub, [2, 0, 1], [1, 0])
    assert rev.lrs == (0.2, 0.00625, 0.05) and rev.batch_sizes == (128, 16)
    s = Benchmark(rev)
    assert s.space == Benchmark(sub).space
    cfg = _sub_configs(table, 50, 11)
    q = jax.jit(lambda bb, c: bb.query(c, 7, mode="test"))
    jax.tree.map(np.testing.assert_array_equal, q(s, cfg), q(b, cfg))
    np.testing.assert_array_equal(jax.jit(s.acc200)(cfg), jax.jit(b.acc200)(cfg))
