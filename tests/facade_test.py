"""nhb.bench.facade.NASHPOBench2API against the official client, call for call, on one table."""

from __future__ import annotations

import inspect
import logging
import pickle
import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from nhb import bench
from nhb.bench.facade import NASHPOBench2API, NotInTableError
from nhb.space import cells

nashpobench2api = pytest.importorskip("nashpobench2api")

MODES = ("train", "valid", "test")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage()))


def _logger(name: str) -> tuple[logging.Logger, _Capture]:
    logger = logging.getLogger(f"nhb.facade_test.{name}")
    logger.handlers.clear()
    capture = _Capture()
    logger.addHandler(capture)
    logger.propagate = False
    return logger, capture


def _pair(source: bench.Table | str, exported, **kwargs) -> tuple[tuple, tuple]:
    """(client on `exported`, facade on `source`), each as (api, its log capture)."""
    out = []
    for name, make in (("client", lambda lg: nashpobench2api.NASHPOBench2API(
            str(exported), logger=lg, **kwargs)),
                       ("facade", lambda lg: NASHPOBench2API(source, logger=lg, **kwargs))):
        logger, capture = _logger(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unverified official files
            out.append((make(logger), capture))
    return out[0], out[1]


def _full_table() -> bench.Table:
    """All 1011 classes on a 4 x 3 sub-grid, 3 seeds, some diverged runs, plus non-representative
    rows of big classes (the client sees one row per class: the representative's)."""
    t = cells.cell_tables()
    big = np.argsort(-t.class_size)[:4]
    extra = [int(np.nonzero(t.class_id == k)[0][-1]) for k in big]
    rows = np.concatenate([t.representative, extra])
    return bench.random_table(3, rows=rows, n_seeds=3, diverged_fraction=0.02,
                              lr_indices=[0, 3, 5, 7], bs_indices=[0, 2, 5])


def _sub_table() -> bench.Table:
    """40 classes (most codes' classes absent), one 200-epoch accuracy missing (NaN)."""
    rng = np.random.default_rng(0)
    rep = cells.cell_tables().representative
    table = bench.random_table(4, rows=rep[np.sort(rng.choice(1011, 40, replace=False))],
                               n_seeds=2, lr_indices=[1, 6], bs_indices=[1, 3, 4])
    table.extra["avg_acc_200"][0, 1, 2] = np.nan  # not exported: the client's KeyError
    return table


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    table = _full_table()
    out = tmp_path_factory.mktemp("full")
    bench.export_official(table, out)
    return table, out


@pytest.fixture(scope="module")
def sub(tmp_path_factory):
    table = _sub_table()
    out = tmp_path_factory.mktemp("sub")
    bench.export_official(table, out)
    return table, out


def _run(api, steps: Callable) -> list:
    """Runs `steps(call, api)`; records every call's result (or error) and the state after it."""
    rec = []

    def call(name: str, *args, **kwargs):
        try:
            res = getattr(api, name)(*args, **kwargs)
        except NotInTableError as e:  # the facade's named KeyError for absent data
            assert "is not in this table" in str(e)
            res = ("raised", "KeyError", "<absent>")
        except KeyError as e:
            absent = isinstance(e.args[0], tuple)  # the client's missing dict entry
            res = ("raised", "KeyError", "<absent>" if absent else str(e))
        except Exception as e:
            res = ("raised", type(e).__name__, str(e))
        rec.append(repr((name, args, kwargs, res, api.seed, api.total_cost,
                         len(api.acc_trans))))  # repr: exact floats and their types
        return res

    steps(call, api)
    return rec


def _random_session(seed: int, n: int) -> Callable:
    """A random-search-like session over every public method (same draws for both APIs)."""

    def steps(call: Callable, api) -> None:
        random.seed(seed)
        rng = np.random.default_rng(seed)
        for name in ("__len__", "__str__", "get_search_space", "get_total_cost"):
            call(name)
        for k in range(n):
            key = call("get_random_key")
            r = int(rng.integers(12))
            seed_arg = [None, 0, *api.seeds][int(rng.integers(len(api.seeds) + 2))]
            mode = MODES[int(rng.integers(3))]
            iepoch = [None, *range(1, 13)][int(rng.integers(13))]
            if r < 4:
                call("query_by_key", **key)
            elif r < 7:
                call("query_by_key", **key, mode=mode, iepoch=iepoch, seed=seed_arg,
                     enable_log=bool(rng.integers(4)))
            elif r == 7:
                call("query_by_key", key["cellcode"], key["lr"], key["batch_size"], 200, mode)
            elif r == 8:
                idx = (int(rng.integers(-len(api.cellcodes), len(api.cellcodes))),
                       int(rng.integers(len(api.lrs))), int(rng.integers(len(api.batch_sizes))))
                call("query_by_index", *idx, epoch=[12, 200][k % 2],
                     iepoch=iepoch if k % 2 == 0 else None, seed=seed_arg)
            elif r == 9:
                i = int(rng.integers(len(api)))
                call("__getitem__", i)
                call("get_idx_from_key", call("get_key_from_idx", i))
            elif r == 10:
                call("set_seed", api.seeds[int(rng.integers(len(api.seeds)))])
                call("get_total_cost")
            elif k % 3 == 0:
                call("get_results", epoch=["both", 12, 200][k % 9 // 3], mode=mode)
            else:
                call("query_by_key", **key, iepoch=iepoch)
        call("get_results")
        call("get_results", 12, "valid")
        call("get_results", epoch=200)
        call("reset_logdata", verbose=True)
        call("get_results")  # nothing logged since the reset: the client's TypeError

    return steps


def _bad_inputs(call: Callable, api) -> None:
    code, lr, bs = api.cellcodes[0], api.lrs[0], api.batch_sizes[0]
    for args, kwargs in [
        (("0|00|004", lr, bs), {}), ((["0|00|000"], lr, bs), {}), ((code, 0.3, bs), {}),
        ((code, lr, 100), {}), ((code, lr, bs, 13), {}), ((code, lr, bs, "both"), {}),
        ((code, lr, bs), {"mode": "val"}), ((code, lr, bs, 200), {"iepoch": 5}),
        ((code, lr, bs), {"iepoch": 13}), ((code, lr, bs), {"iepoch": 0}),
        ((code, lr, bs), {"iepoch": -3}), ((code, lr, bs), {"iepoch": 2.0}),
        ((code, lr, bs, 12.0), {}), ((code, lr, bs), {"iepoch": "3"}),
        ((code, lr, bs), {"iepoch": np.int64(4), "mode": "test"}),
        ((code, lr, bs), {"iepoch": True, "mode": "train"}),
        ((code, np.float64(lr), float(bs)), {}), ((code, lr, bs), {"seed": 123}),
        ((code, lr, bs), {"seed": 123, "mode": "x"}), ((), {}),
        ((code, lr, bs), {"foo": 1}), ((code, lr, bs, 200, "x"), {}),
    ]:
        call("query_by_key", *args, **kwargs)
    call("set_seed", 1)
    for idx in [(5000, 0, 0), (0, 99, 0), (-1, -1, -1), (1.5, 0, 0)]:
        call("query_by_index", *idx)
    call("query_by_index", 3, 0, 0, seed=999)
    for i in [len(api), -1, 1.5]:
        call("__getitem__", i)
    call("get_idx_from_key", {"cellcode": "bad", "lr": lr, "batch_size": bs})
    call("get_idx_from_key", {"cellcode": code, "lr": 1.0, "batch_size": bs})
    call("get_results", epoch=13)
    call("reset_logdata")
    call("get_results")


def _assert_same(client, facade, steps: Callable) -> None:
    (c, c_log), (f, f_log) = client, facade
    assert _run(c, steps) == _run(f, steps)
    for name in ("acc_trans", "key_trans", "best_acc", "best_acc_trans", "best_key",
                 "best_key_trans", "best_cost", "total_cost", "total_cost_trans", "seed"):
        assert repr(getattr(c, name)) == repr(getattr(f, name)), name
    assert c_log.lines == f_log.lines
    assert c.logger.level == f.logger.level


def test_same_search_space(full):
    table, out = full
    (c, _), (f, _) = _pair(table, out)
    for name in ("cellcodes", "lrs", "batch_sizes", "seeds", "epochs", "seed", "verbose"):
        assert repr(getattr(c, name)) == repr(getattr(f, name)), name
    assert len(c) == len(f) == 4096 * 4 * 3 and str(c) == str(f)
    assert c.cellinfo == f.cellinfo and c.avgaccs200 == f.avgaccs200
    assert c.bench12.keys() == f.bench12.keys()
    assert all(c.bench12[k] == f.bench12[k] for k in ("lr", "valid_acc_11", "total_test_time"))
    assert c._cellcode2hash("1|23|012") == f._cellcode2hash("1|23|012")


def test_public_interface_matches():
    ours, theirs = NASHPOBench2API, nashpobench2api.NASHPOBench2API
    public = [n for n in vars(theirs) if not n.startswith("_") or n in (
        "__init__", "__len__", "__str__", "__getitem__")]
    for name in public:
        a, b = inspect.signature(getattr(theirs, name)), inspect.signature(getattr(ours, name))
        assert [(p.name, p.kind, p.default) for p in a.parameters.values()] == [
            (p.name, p.kind, p.default) for p in b.parameters.values()], name


@pytest.mark.parametrize("seed,verbose", [(0, True), (555, False)])
def test_random_session_identical(full, seed, verbose):
    table, out = full
    _assert_same(*_pair(table, out, seed=seed, verbose=verbose), _random_session(seed, 500))


def test_bad_input_identical(full):
    table, out = full
    _assert_same(*_pair(table, out), _bad_inputs)


def test_absent_classes_and_200_epoch_values(sub):
    table, out = sub
    client, facade = _pair(table, out, seed=555)
    _assert_same(client, facade, _random_session(7, 300))  # many absent classes
    f = facade[0]
    absent = next(c for c in f.cellcodes if f._row_of_code[c] < 0)
    with pytest.raises(NotInTableError, match=r"cell class of cell .* holds 40 of 1011"):
        f.query_by_key(absent, f.lrs[0], f.batch_sizes[0], seed=222)
    assert f.seed == 222  # set before the lookup fails, as the client does
    code = cells.cell_tables().codes[table.cells[0]]
    with pytest.raises(KeyError, match="200-epoch accuracy"):
        f.query_by_key(code, table.lrs[1], table.batch_sizes[2], epoch=200)
    with pytest.raises(KeyError):
        client[0].query_by_key(code, table.lrs[1], table.batch_sizes[2], epoch=200)


def test_loads_paths_and_answers_the_same(full, sub, tmp_path):
    table, out = sub
    bench.save_table(table, tmp_path / "build" / bench.TABLE_FILE)
    with pytest.warns(UserWarning, match="unverified"):
        from_pickles = NASHPOBench2API(f"unverified:{out}", verbose=False)
    apis = [NASHPOBench2API(table, verbose=False), NASHPOBench2API(tmp_path / "build"),
            NASHPOBench2API(str(tmp_path / "build" / bench.TABLE_FILE)), from_pickles]
    records = [_run(a, _random_session(3, 150)) for a in apis]
    assert all(r == records[0] for r in records[1:])
    logger = logging.getLogger("nhb.bench.facade")
    assert len(logger.handlers) == 1 and not logger.propagate  # one handler, not one per API
    capture = _Capture()
    logger.addHandler(capture)
    try:
        with pytest.raises(bench.TableError, match="does not exist"):
            NASHPOBench2API(tmp_path / "nothing")
    finally:
        logger.removeHandler(capture)
    assert capture.lines[0][0] == "ERROR" and capture.lines[0][1].startswith("HINT:")
    with pytest.raises(ValueError, match="12-epoch protocol"):
        NASHPOBench2API(bench.random_table(1, rows=[0], n_seeds=1, n_epochs=3))
    with pytest.raises(AttributeError, match="no 200-epoch"):
        _ = NASHPOBench2API(bench.random_table(1, rows=[0], avg_acc_200=False)).avgaccs200


def test_runs_missing_from_official_pickles(sub, tmp_path):
    """Pickles lacking one run: the client's KeyError is the facade's NotInTableError."""
    table, _ = sub
    dicts = bench.official_dicts(table)
    gone = next(iter(dicts["bench12.pkl"]["lr"]))
    for column in dicts["bench12.pkl"].values():
        del column[gone]
    for name, obj in dicts.items():
        (tmp_path / name).write_bytes(pickle.dumps(obj))
    client, facade = _pair(f"unverified:{tmp_path}", tmp_path)
    code = next(c for c in facade[0].cellcodes
                if facade[0]._cellcode2hash(c) == gone[0])

    def steps(call: Callable, api) -> None:
        for mode in MODES:
            call("query_by_key", code, gone[1], gone[2], mode=mode, seed=gone[3])
            call("query_by_key", code, gone[1], gone[2], mode=mode, iepoch=3)
        call("query_by_key", code, gone[1], gone[2], epoch=200)
        _random_session(5, 100)(call, api)

    _assert_same(client, facade, steps)
    with pytest.raises(NotInTableError, match=r"the run \(lr .*\) of cell"):
        facade[0].query_by_key(code, gone[1], gone[2], seed=gone[3])
