"""Tests for nhb.bench.official against the official client `nashpobench2api` (PyPI)."""

import functools
import logging
import operator
import pickle

import numpy as np
import pytest

from nhb import bench
from nhb.bench import official
from nhb.space import cells, nhb2

nashpobench2api = pytest.importorskip("nashpobench2api")

SPLITS = ("train", "valid", "test")


def _classes() -> np.ndarray:
    """~40 classes: the largest ones, the disconnected class, singletons, random others."""
    t = cells.cell_tables()
    rng = np.random.default_rng(0)
    big = np.argsort(-t.class_size)[:8]
    disconnected = [t.class_id[np.argmax(t.disconnected)]]
    return np.unique(np.concatenate([big, disconnected, rng.choice(1011, 32, replace=False)]))


@pytest.fixture(scope="module")
def table() -> bench.Table:
    rep = cells.cell_tables().representative
    return bench.random_table(3, rows=rep[_classes()], n_seeds=3, diverged_fraction=0.02)


@pytest.fixture(scope="module")
def exported(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("official")
    files = bench.export_official(table, out)
    assert sorted(files) == ["avgaccs200.pkl", "bench12.pkl", "cellinfo.pkl"]
    return out


def _client(data_dir) -> "nashpobench2api.NASHPOBench2API":
    logger = logging.getLogger("nhb.official_test")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return nashpobench2api.NASHPOBench2API(str(data_dir), logger=logger, verbose=False)


def _expected(table, cell, lr, bs, seed, mode, iepoch):
    """Our accuracy and cost for one client query (the rules in official.py's docstring)."""
    row = table.row_of_cell[cell]
    s = table.seeds.index(seed)
    acc = table.metrics[f"{mode}_acc"][row, lr, bs, s, iepoch - 1]
    splits = SPLITS[:SPLITS.index(mode) + 1]
    cost = sum(np.sum(table.metrics[f"{m}_time"][row, lr, bs, s, :iepoch], dtype=np.float64)
               for m in splits)
    return float(acc), float(cost)


def test_client_sees_our_search_space(table, exported):
    api = _client(exported)
    assert api.cellcodes == list(cells.cell_tables().codes)  # sorted codes == our index order
    assert api.lrs == list(nhb2.LRS) and api.batch_sizes == list(nhb2.BATCH_SIZES)
    assert api.seeds == list(table.seeds) and api.seed == 222
    assert len(api) == nhb2.NUM_CONFIGS


def test_client_returns_our_numbers(table, exported):
    api = _client(exported)
    rng = np.random.default_rng(1)
    t = cells.cell_tables()
    stored = np.nonzero(table.row_of_cell >= 0)[0]
    non_rep = stored[t.representative[t.class_id[stored]] != stored]
    assert len(non_rep) > 300  # the big classes contribute many non-representative members
    for k in range(600):
        cell = int(rng.choice(non_rep if k % 2 else stored))
        lr, bs = int(rng.integers(8)), int(rng.integers(6))
        seed = table.seeds[int(rng.integers(table.n_seeds))]
        mode = SPLITS[int(rng.integers(3))]
        iepoch = int(rng.integers(1, 13))
        code, lr_value, bs_value = nhb2.to_key(nhb2.make(t.digits[cell], lr, bs))
        before = api.total_cost
        acc, cost = api.query_by_key(code, lr_value, bs_value, epoch=12, mode=mode,
                                     iepoch=None if iepoch == 12 and k % 3 else iepoch,
                                     seed=seed)
        want_acc, want_cost = _expected(table, cell, lr, bs, seed, mode, iepoch)
        assert acc == want_acc, (code, lr, bs, seed, mode, iepoch)
        assert cost == pytest.approx(want_cost, rel=1e-12, abs=0)
        assert api.total_cost == pytest.approx(before + cost, rel=1e-12)
        if iepoch == 12:  # full queries use the precomputed totals: plain left-to-right sums
            row, si = table.row_of_cell[cell], table.seeds.index(seed)
            times = {m: table.metrics[f"{m}_time"][row, lr, bs, si].tolist() for m in SPLITS}
            trainval = functools.reduce(operator.add, times["train"] + times["valid"])
            exact = {"train": functools.reduce(operator.add, times["train"]),
                     "valid": trainval,
                     "test": trainval + functools.reduce(operator.add, times["test"])}[mode]
            assert cost == exact
        acc200, cost200 = api.query_by_key(code, lr_value, bs_value, epoch=200)
        assert cost200 is None
        assert acc200 == float(table.extra["avg_acc_200"][table.row_of_cell[cell], lr, bs])


def test_query_by_index_is_valid_mode_with_sticky_seed(table, exported):
    api = _client(exported)
    cell = int(table.cells[4])
    acc, cost = api.query_by_index(cell, 3, 2, seed=888)
    assert (acc, pytest.approx(cost, rel=1e-12)) == _expected(table, cell, 3, 2, 888, "valid", 12)
    assert api.seed == 888  # set_seed persists for later queries without a seed
    acc2, _ = api.query_by_key(*nhb2.to_key(nhb2.make(nhb2.cell_from_index(cell), 3, 2)))
    assert acc2 == acc
    # Repeated queries are charged again.
    total = api.get_total_cost()
    api.query_by_index(cell, 3, 2)
    assert api.get_total_cost() == pytest.approx(total + cost, rel=1e-12)


def test_round_trip_through_official_files(table, exported):
    back = bench.import_official(exported / "bench12.pkl", exported / "cellinfo.pkl",
                                 exported / "avgaccs200.pkl")
    np.testing.assert_array_equal(back.cells, np.sort(table.cells))  # class order
    order = np.argsort(cells.cell_tables().class_id[table.cells])
    np.testing.assert_array_equal(back.cells, table.cells[order])
    assert back.seeds == table.seeds and back.n_epochs == 12
    for m in bench.METRICS:
        if m.endswith("loss"):
            assert np.isnan(back.metrics[m]).all()
        else:
            np.testing.assert_array_equal(back.metrics[m], table.metrics[m][order])
    np.testing.assert_array_equal(back.extra["avg_acc_200"], table.extra["avg_acc_200"][order])
    assert not back.diverged.any() and back.meta["missing_runs"] == 0
    assert back.meta["protocol"] == "official"
    # The stored totals re-export identically.
    out = exported.parent / "again"
    bench.export_official(back, out)
    for name in ("bench12.pkl", "cellinfo.pkl", "avgaccs200.pkl"):
        with open(exported / name, "rb") as f, open(out / name, "rb") as g:
            a, b = pickle.load(f), pickle.load(g)
        assert a == b, name


def test_non_finite_accuracies_import_as_diverged(table):
    dicts = official.official_dicts(table)
    bench12 = dicts["bench12.pkl"]
    key = next(iter(bench12["valid_acc_5"]))
    bench12["valid_acc_5"][key] = float("nan")
    back = bench.import_official(bench12, dicts["cellinfo.pkl"])
    assert back.diverged.sum() == 1


def test_cells_of_one_class_share_one_hash(exported):
    with open(exported / "cellinfo.pkl", "rb") as f:
        info = pickle.load(f)
    t = cells.cell_tables()
    hashes = np.array([info["hash"][c] for c in t.codes])
    assert len(info["hash"]) == 4096 and len(set(hashes)) == 1011
    for k in range(1011):
        assert len(set(hashes[t.class_id == k])) == 1


def test_import_errors(table, exported, tmp_path):
    with pytest.raises(bench.TableError, match="not found"):
        bench.import_official(tmp_path / "bench12.pkl", exported / "cellinfo.pkl")
    truncated = tmp_path / "bench12.pkl"
    truncated.write_bytes((exported / "bench12.pkl").read_bytes()[:10_000])
    with pytest.raises(bench.TableError, match="corrupt or truncated"):
        bench.import_official(truncated, exported / "cellinfo.pkl")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"hash": logging.Logger}))
    with pytest.raises(bench.TableError, match="trusted=True"):
        bench.import_official(exported / "bench12.pkl", evil)
    with open(exported / "cellinfo.pkl", "rb") as f:
        info = pickle.load(f)
    t = cells.cell_tables()
    big = int(np.argmax(t.class_size))
    split = dict(info["hash"])
    split[t.codes[np.nonzero(t.class_id == big)[0][-1]]] = "somewhere-else"
    with pytest.raises(bench.TableError, match="disagree"):
        bench.import_official(exported / "bench12.pkl", {"hash": split})
    with pytest.raises(ValueError, match="12-epoch"):
        bench.export_official(bench.random_table(rows=[0], n_epochs=3), tmp_path)


def test_full_1011_class_export_works_with_client(tmp_path):
    table = bench.random_table(5, n_seeds=1, avg_acc_200=True)
    bench.export_official(table, tmp_path)
    api = _client(tmp_path)
    rng = np.random.default_rng(2)
    for idx in rng.integers(0, len(api), 200):
        key = api.get_key_from_idx(int(idx))
        assert api.get_idx_from_key(key) == idx
        acc, _ = api.query_by_key(**key, mode="test")
        cfg = nhb2.from_index(int(idx))
        row = table.row_of_cell[int(nhb2.cell_index(cfg.cell))]
        assert acc == float(table.metrics["test_acc"][row, int(cfg.lr), int(cfg.bs), 0, -1])


def test_export_needs_12_epochs_and_takes_a_build_directory(tmp_path):
    short = bench.random_table(1, rows=[0, 5], n_seeds=1, n_epochs=3)
    with pytest.raises(ValueError, match=r"12-epoch protocol .* this table has 3 epochs "
                                         r"\(protocol 'random'\); build a 12-epoch table"):
        bench.export_official(short, tmp_path / "no")
    assert not (tmp_path / "no").exists()  # checked before writing anything
    sub = bench.fake.sub_grid(bench.random_table(2, rows=[0, 5], n_seeds=1), [2, 5], [1])
    bench.save_table(sub, tmp_path / "build" / bench.TABLE_FILE)
    files = bench.export_official(tmp_path / "build", tmp_path / "out")  # a build directory
    with open(files["bench12.pkl"], "rb") as f:
        b12 = pickle.load(f)
    assert sorted({(k[1], k[2]) for k in b12["lr"]}) == [(0.0125, 32), (0.1, 32)]
    assert len(b12["valid_acc_11"]) == 2 * 2 * 1  # 2 classes x 2 lrs x 1 batch size
