"""Tests for nhb.bench.surrogate / surrogate_cv: the bagged GIN surrogate and its grouped CV."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from nhb import bench
from nhb.bench import surrogate as sg
from nhb.bench import surrogate_cv as cv
from nhb.space import cells, nhb2

# Small and fast, but enough to learn the synthetic target (assumed sizes are the defaults).
CONFIG = sg.SurrogateConfig(num_members=3, epochs=30, batch_size=128, learning_rate=1e-2)


def _dataset(seed: int, n_classes: int, hps_per_cell: int) -> tuple[nhb2.Config, np.ndarray]:
    """Random classes (via a random member cell), random (lr, bs) each, synthetic targets."""
    rng = np.random.default_rng(seed)
    t = cells.cell_tables()
    classes = rng.choice(len(t.unique_codes), n_classes, replace=False)
    members = [rng.choice(np.nonzero(t.class_id == c)[0]) for c in classes]
    hps = np.stack([rng.choice(nhb2.NUM_HPS, hps_per_cell, replace=False) for _ in classes])
    cfgs = nhb2.make(nhb2.cell_from_index(np.repeat(members, hps_per_cell)),
                     hps.reshape(-1) // nhb2.NUM_BS, hps.reshape(-1) % nhb2.NUM_BS)
    return cfgs, cv.synthetic_target(cfgs)


@pytest.fixture(scope="module")
def data():
    return _dataset(0, 90, 16)


@pytest.fixture(scope="module")
def fitted(data):
    """Fit on 70 classes; the last 20 classes are held-out architectures."""
    cfgs, y = data
    n = 70 * 16
    train = jax.tree.map(lambda x: x[:n], cfgs)
    return sg.fit(jax.random.key(0), train, y[:n], CONFIG)


def test_fit_generalises_to_held_out_architectures(data, fitted):
    cfgs, y = data
    n = 70 * 16
    test = jax.tree.map(lambda x: x[n:], cfgs)
    assert not set(np.asarray(nhb2.canonical(test)).tolist()) & set(
        np.asarray(nhb2.canonical(jax.tree.map(lambda x: x[:n], cfgs))).tolist())
    pred = np.asarray(fitted.predict(test))
    r2 = cv.r2_score(y[n:], pred)
    assert r2 > 0.9, r2
    info = fitted.info
    assert info["n_train"] + info["n_valid"] == n and info["n_valid"] > 0
    assert len(info["best_epoch"]) == CONFIG.num_members
    assert all(0 <= e < CONFIG.epochs for e in info["best_epoch"])


def test_cross_validation_folds_and_report(data):
    cfgs, y = data
    res = cv.cross_validate(jax.random.key(1), cfgs, y, CONFIG, n_folds=3, baselines=("gbr",),
                            log=None)
    rep = res["report"]
    json.dumps(rep)
    assert set(rep["models"]) == {"gin", "gbr"}
    gin = rep["models"]["gin"]
    assert len(gin["folds"]) == 3
    assert gin["mean_test_r2"] > 0.9, gin
    assert np.isclose(gin["mean_test_r2"], np.mean([f["r2"] for f in gin["folds"]]))
    assert all(np.isfinite(res["predictions"][m]).all() for m in ("gin", "gbr"))
    # Out-of-fold predictions reproduce the per-fold metrics.
    for f in gin["folds"]:
        sel = res["fold"] == f["fold"]
        assert np.isclose(cv.r2_score(y[sel], res["predictions"]["gin"][sel]), f["r2"],
                          atol=1e-5)
    final = sg.Surrogate.combine(res["surrogates"])
    assert final.num_members == 3 * CONFIG.num_members
    p = np.asarray(final.predict(cfgs))
    np.testing.assert_allclose(
        p, np.mean([np.asarray(s.predict(cfgs)) for s in res["surrogates"]], 0), rtol=1e-5)


def test_cv_folds_never_share_an_architecture():
    t = cells.cell_tables()
    rng = np.random.default_rng(3)
    cell_idx = rng.choice(nhb2.NUM_CELLS, 300, replace=False)  # several cells per big class
    groups = np.repeat(t.class_id[cell_idx], 7)
    splits = cv.cv_splits(jax.random.key(0), groups, n_folds=5, valid_fraction=0.2)
    tests = np.concatenate([s[2] for s in splits])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(groups)))
    sizes = [len(s[2]) for s in splits]
    assert max(sizes) - min(sizes) <= 7 * np.bincount(groups).max()
    for i, (tr, va, te) in enumerate(splits):
        sets = [set(groups[x].tolist()) for x in (tr, va, te)]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
        assert len(tr) + len(va) + len(te) == len(groups)
        assert 0.1 < len(va) / (len(tr) + len(va)) < 0.3
        for _, _, te2 in splits[i + 1:]:
            assert not set(groups[te].tolist()) & set(groups[te2].tolist())


def test_equivalent_cells_get_identical_predictions(fitted):
    t = cells.cell_tables()
    for c in np.argsort(-t.class_size)[:3]:
        members = np.nonzero(t.class_id == c)[0]
        lr = np.full(len(members), 5)
        bs = np.full(len(members), 2)
        pred = np.asarray(fitted.predict(nhb2.make(nhb2.cell_from_index(members), lr, bs)))
        assert np.all(pred == pred[0]), (c, np.ptp(pred))


def test_predict_is_jittable_and_keeps_batch_shape(fitted):
    cfg = nhb2.sample(jax.random.key(5), 12)
    eager = np.asarray(fitted.predict(cfg))
    np.testing.assert_allclose(jax.jit(fitted.predict)(cfg), eager, rtol=1e-6)
    one = jax.tree.map(lambda x: x[3], cfg)
    assert fitted.predict(one).shape == ()
    grid = jax.tree.map(lambda x: x.reshape(3, 4, *x.shape[1:]), cfg)
    np.testing.assert_allclose(fitted.predict(grid).reshape(-1), eager, rtol=1e-6)


def test_save_load_round_trip_and_errors(fitted, tmp_path: pathlib.Path):
    path = tmp_path / "s.nhbs"
    fitted.save(path)
    loaded = sg.Surrogate.load(path)
    assert loaded.config == fitted.config and loaded.info == fitted.info
    cfg = nhb2.sample(jax.random.key(9), 64)
    np.testing.assert_array_equal(loaded.predict(cfg), fitted.predict(cfg))
    raw = path.read_bytes()
    cases = [("corrupt", raw[:-10] + bytes(10)), ("truncated", raw[:-100]),
             ("not an nhb", b"x" * 40), ("truncated", raw[:30])]
    for i, (what, content) in enumerate(cases):
        bad = tmp_path / f"bad{i}.nhbs"
        bad.write_bytes(content)
        with pytest.raises(sg.SurrogateError, match=what):
            sg.Surrogate.load(bad)
    with pytest.raises(sg.SurrogateError, match="does not exist"):
        sg.Surrogate.load(tmp_path / "missing.nhbs")
    # Another format version / a config that does not match the parameters.
    n = int.from_bytes(raw[8:16], "little")
    header = json.loads(raw[16:16 + n])
    for change, match in (({"format_version": 99}, "format_version 99"),
                          ({"config": dict(header["config"], gin_features=8)}, "do not match")):
        head = json.dumps(dict(header, **change)).encode()
        bad = tmp_path / "changed.nhbs"
        bad.write_bytes(sg.MAGIC + len(head).to_bytes(8, "little") + head + raw[16 + n:])
        with pytest.raises(sg.SurrogateError, match=match):
            sg.Surrogate.load(bad)
    assert not list(tmp_path.glob(".*.tmp"))


def test_metrics_match_scipy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 20, 500).astype(float)  # many ties
    p = y + rng.normal(0, 5, 500)
    p[:50] = np.round(p[:50])
    np.testing.assert_allclose(cv.rankdata(p), scipy.stats.rankdata(p))
    np.testing.assert_allclose(cv.spearman(y, p), scipy.stats.spearmanr(y, p).statistic,
                               rtol=1e-10)
    np.testing.assert_allclose(cv.kendall_tau(y, p, chunk=64),
                               scipy.stats.kendalltau(y, p).statistic, rtol=1e-10)
    ss = ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    np.testing.assert_allclose(cv.r2_score(y, p), 1 - ss)
    m = cv.regression_metrics(y, p)
    assert set(m) == {"r2", "kendall_tau", "spearman", "rmse", "mae"}
    mask = jnp.asarray(rng.random(500) < 0.5, jnp.float32)
    sel = np.asarray(mask) > 0
    np.testing.assert_allclose(jax.jit(sg.masked_r2)(jnp.asarray(y), jnp.asarray(p), mask),
                               cv.r2_score(y[sel], p[sel]), rtol=1e-5)


def test_targets_from_table():
    c200 = cv.cells_200ep()
    assert len(c200) == 100 and len(set(c200.tolist())) == 100
    table = bench.random_table(2, rows=c200[:6], n_seeds=2, n_epochs=3)
    cfgs, y = cv.targets_from_table(table)
    assert y.shape == (6 * 48,) and cfgs.shape == (6 * 48,)
    mean = table.seed_mean("test_acc", -1)
    np.testing.assert_allclose(y[:48], mean[0].reshape(-1))
    np.testing.assert_array_equal(nhb2.to_index(cfgs)[:48], c200[0] * 48 + np.arange(48))
    codes = [cells.cell_tables().codes[c] for c in c200[[4, 1]]]
    _, y2 = cv.targets_from_table(table, epoch=0, cells=codes, metric="valid_acc")
    np.testing.assert_allclose(y2, table.seed_mean("valid_acc", 0)[[4, 1]].reshape(-1))
    _, y3 = cv.targets_from_table(table, cells=c200[[2]], metric="avg_acc_200")
    np.testing.assert_allclose(y3, table.extra["avg_acc_200"][2].reshape(-1))
    with pytest.raises(ValueError, match="no row"):
        cv.targets_from_table(table, cells=[c200[50]])
    with pytest.raises(ValueError, match="unknown metric"):
        cv.targets_from_table(table, metric="nope")
    table.metrics["test_acc"][0, 0, 0] = np.nan  # both seeds unknown -> dropped
    cfgs4, y4 = cv.targets_from_table(table)
    assert len(y4) == 6 * 48 - 1 and np.isfinite(y4).all() and cfgs4.shape == y4.shape


def test_targets_from_a_sub_grid_table():
    c200 = cv.cells_200ep()
    table = bench.fake.sub_grid(bench.random_table(4, rows=c200[:3], n_seeds=1, n_epochs=2),
                                [1, 6], [0, 2, 5])
    cfgs, y = cv.targets_from_table(table)
    assert y.shape == (3 * 6,)
    lr, bs = np.meshgrid([1, 6], [0, 2, 5], indexing="ij")
    np.testing.assert_array_equal(
        nhb2.to_index(cfgs)[:6], c200[0] * 48 + (lr * 6 + bs).reshape(-1))
    np.testing.assert_allclose(y, table.seed_mean("test_acc").reshape(-1))
    _, y2 = cv.targets_from_table(table, metric="avg_acc_200")
    np.testing.assert_allclose(y2, table.extra["avg_acc_200"].reshape(-1))


def test_too_few_architectures_for_grouped_cv(tmp_path):
    from nhb.bench import surrogate_study

    table = bench.random_table(4, rows=cells.cell_tables().representative[:3], n_seeds=1,
                               n_epochs=2)
    with pytest.raises(ValueError, match=r"5-fold .* has 3 architecture class\(es\) but needs "
                                         r"at least 5 .* or fewer folds \(--folds <= 3\)"):
        surrogate_study.run_surrogate_cv(table, tmp_path / "cv", log=None)
    assert not (tmp_path / "cv").exists()  # raised before any training or output
    with pytest.raises(ValueError, match="needs at least 2"):
        cv.check_cv_size(1, 2)
    with pytest.raises(ValueError, match=r"valid choices: \['mlp', 'gbr'\]"):
        surrogate_study.run_surrogate_cv(table, tmp_path / "cv", baselines=["svm"], log=None)
