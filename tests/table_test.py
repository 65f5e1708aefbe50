"""Tests for nhb.bench.table: the dense Table, its file format, integrity checks, speed."""

import dataclasses
import json
import os
import pathlib
import struct
import time

import jax
import numpy as np
import pytest

from nhb import bench
from nhb.bench import table as tbl
from nhb.space import cells, nhb2


@pytest.fixture(scope="module")
def small() -> bench.Table:
    t = cells.cell_tables()
    disconnected = t.class_id[np.argmax(t.disconnected)]  # the 169-cell class
    rows = np.concatenate([t.representative[:20], [t.representative[disconnected]]])
    return bench.random_table(1, rows=rows, n_seeds=2, diverged_fraction=0.05)


def _assert_same(a: bench.Table, b: bench.Table) -> None:
    for m in bench.METRICS:
        np.testing.assert_array_equal(a.metrics[m], b.metrics[m])
        assert b.metrics[m].dtype == np.float32
    np.testing.assert_array_equal(a.diverged, b.diverged)
    np.testing.assert_array_equal(a.cells, b.cells)
    assert a.seeds == b.seeds and a.lrs == b.lrs and a.batch_sizes == b.batch_sizes
    assert a.meta == b.meta
    assert sorted(a.extra) == sorted(b.extra)
    for k in a.extra:
        np.testing.assert_array_equal(a.extra[k], b.extra[k])


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip_is_exact(small, tmp_path, mmap):
    path = bench.save_table(small, tmp_path / "t.nhbt")
    loaded = bench.load_table(path, mmap=mmap)
    _assert_same(small, loaded)
    assert loaded.diverged.dtype == bool and loaded.cells.dtype == np.int32
    assert np.isnan(loaded.metrics["train_loss"][loaded.diverged]).all()
    header = bench.read_header(path)
    assert header["format_version"] == bench.FORMAT_VERSION
    assert all(len(e["sha256"]) == 64 for e in header["arrays"])


def test_meta_is_complete_and_json(small):
    meta = small.meta
    for key in ("format_version", "protocol", "dataset", "code_version", "n_epochs", "created"):
        assert key in meta, key
    assert meta["code_version"].startswith(__import__("nhb").__version__)
    json.dumps(meta)
    with pytest.raises(ValueError, match="JSON"):
        dataclasses.replace(small, meta={"bad": object()})
    with pytest.raises(ValueError, match="n_epochs"):
        dataclasses.replace(small, meta={"n_epochs": 200})


def test_validation_errors(small):
    bad = dict(small.metrics)
    del bad["test_loss"]
    with pytest.raises(ValueError, match="exactly"):
        dataclasses.replace(small, metrics=bad)
    with pytest.raises(ValueError, match="diverged"):
        dataclasses.replace(small, diverged=small.diverged[:, :, :, :1])
    with pytest.raises(ValueError, match="unique"):
        dataclasses.replace(small, cells=np.zeros_like(small.cells))
    with pytest.raises(ValueError, match="seeds"):
        dataclasses.replace(small, seeds=(1, 2, 3))


def test_row_of_cell_maps_every_member_of_a_stored_class(small):
    t = cells.cell_tables()
    row = small.row_of_cell
    assert row.shape == (4096,) and row.dtype == np.int32
    stored = np.isin(t.class_id, t.class_id[small.cells])
    assert (row[~stored] == -1).all()
    np.testing.assert_array_equal(t.class_id[small.cells[row[stored]]], t.class_id[stored])
    # The disconnected class (169 cells) is the last row of `small`.
    assert (row[t.disconnected] == small.n_rows - 1).all()
    assert (small.class_rows >= 0).sum() == small.n_rows


def test_row_of_cell_prefers_exact_cell_then_representative():
    t = cells.cell_tables()
    big = int(np.argmax(t.class_size))
    members = np.nonzero(t.class_id == big)[0]
    rep = t.representative[big]
    other = [m for m in members if m != rep][:2]
    table = bench.random_table(0, rows=[other[0], rep, other[1]], n_seeds=1, avg_acc_200=False)
    row = table.row_of_cell
    assert row[other[0]] == 0 and row[rep] == 1 and row[other[1]] == 2
    rest = [m for m in members if m not in (rep, *other)]
    assert (row[rest] == 1).all() and table.class_rows[big] == 1
    # All 4096 cells stored: the mapping is the identity.
    full = bench.random_table(0, rows=np.arange(4096), n_seeds=1, n_epochs=2,
                              avg_acc_200=False)
    np.testing.assert_array_equal(full.row_of_cell, np.arange(4096))


def test_summary_reports_best_configs_as_official_keys(small):
    valid = small.metrics["valid_acc"].copy()
    test = small.metrics["test_acc"].copy()
    valid[3, 2, 4, :, -1] = 99.0
    test[5, 7, 0, :, -1] = 99.5
    t = dataclasses.replace(small, metrics={**small.metrics, "valid_acc": valid,
                                            "test_acc": test})
    s = t.summary()
    json.dumps(s)
    codes = cells.cell_tables().codes
    assert s["best_by_valid"]["code"] == codes[t.cells[3]]
    assert (s["best_by_valid"]["lr"], s["best_by_valid"]["batch_size"]) == (
        nhb2.LRS[2], nhb2.BATCH_SIZES[4])
    assert s["best_by_valid"]["valid_acc"] == 99.0
    assert s["best_by_test"] == dict(
        code=codes[t.cells[5]], lr=nhb2.LRS[7], batch_size=16, valid_acc=float(
            t.seed_mean("valid_acc")[5, 7, 0]), test_acc=99.5,
        avg_acc_200=float(t.extra["avg_acc_200"][5, 7, 0]))
    assert s["final_test_acc"]["max"] == 99.5
    assert s["diverged_runs"] == int(t.diverged.sum()) > 0
    assert (s["rows"], s["seeds"], s["epochs"], s["runs"]) == (21, [222, 555], 12, 21 * 48 * 2)


def test_to_jax_gathers_under_jit(small):
    jt = small.to_jax()
    rng = np.random.default_rng(0)
    stored = np.nonzero(small.row_of_cell >= 0)[0]  # includes non-representative members
    cell = rng.choice(stored, 64)
    lr, bs = rng.integers(0, 8, 64), rng.integers(0, 6, 64)
    cfg = nhb2.make(nhb2.cell_from_index(cell), lr, bs)

    @jax.jit
    def gather(jt, cfg):
        row = jt.row_of_cell[nhb2.cell_index(cfg.cell)]
        return jt.metrics["valid_acc"][row, cfg.lr, cfg.bs, 0, -1]

    want = small.metrics["valid_acc"][small.row_of_cell[cell], lr, bs, 0, -1]
    np.testing.assert_array_equal(np.asarray(gather(jt, cfg)), want)
    assert set(small.to_jax(["test_acc"]).metrics) == {"test_acc"}


# ----------------------------------------------------------------------------- integrity


def test_missing_file_and_directory_raise_table_error(tmp_path):
    with pytest.raises(bench.TableError, match="does not exist"):
        bench.load_table(tmp_path / "nope.nhbt")
    with pytest.raises(bench.TableError, match="directory"):
        bench.load_table(tmp_path)
    assert issubclass(bench.TableError, ValueError)


def test_not_a_table_raises(tmp_path):
    p = tmp_path / "x.nhbt"
    p.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(bench.TableError, match="not an nhb table"):
        bench.load_table(p)


@pytest.mark.parametrize("keep", [0, 5, 12, 100, -1])
def test_truncated_file_raises(small, tmp_path, keep):
    path = bench.save_table(small, tmp_path / "t.nhbt")
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:-1000])
    with pytest.raises(bench.TableError, match=r"truncated|corrupt"):
        bench.load_table(path)


def test_flipped_payload_byte_fails_checksum(small, tmp_path):
    path = bench.save_table(small, tmp_path / "t.nhbt")
    data = bytearray(path.read_bytes())
    data[-5000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(bench.TableError, match="sha256 checksum mismatch"):
        bench.load_table(path)
    bench.load_table(path, verify=False)  # opt-out still loads


def test_corrupt_header_raises(small, tmp_path):
    path = bench.save_table(small, tmp_path / "t.nhbt")
    data = bytearray(path.read_bytes())
    data[20:30] = b"!" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(bench.TableError, match="corrupt header"):
        bench.load_table(path)


def test_other_format_version_raises(small, tmp_path):
    path = bench.save_table(small, tmp_path / "t.nhbt")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16:16 + n])
    header["format_version"] = 999
    new = json.dumps(header).encode().ljust(n)
    assert len(new) == n
    path.write_bytes(data[:16] + new + data[16 + n:])
    with pytest.raises(bench.TableError, match=r"format_version 999.*reads version 1"):
        bench.load_table(path)


def test_atomic_write_leaves_no_temp_files(small, tmp_path, monkeypatch):
    path = tmp_path / "sub" / "t.nhbt"
    bench.save_table(small, path)
    bench.save_table(small, path)  # overwrite in place
    assert sorted(os.listdir(path.parent)) == ["t.nhbt"]
    before = path.read_bytes()

    def boom(*args):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    changed = dataclasses.replace(small, meta={"protocol": "changed"})
    with pytest.raises(OSError, match="simulated"):
        bench.save_table(changed, path)
    monkeypatch.undo()
    assert sorted(os.listdir(path.parent)) == ["t.nhbt"]
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- speed


def _fast_random_table(n_rows: int) -> bench.Table:
    """Full-size table with random contents (values irrelevant; only size matters)."""
    rng = np.random.default_rng(0)
    shape = (n_rows, 8, 6, 3, 12)
    return bench.Table(
        metrics={m: rng.random(shape, dtype=np.float32) for m in bench.METRICS},
        diverged=rng.random(shape[:4]) < 0.01, cells=np.arange(n_rows),
        meta=bench.make_meta("speed-test"),
        extra={"avg_acc_200": rng.random(shape[:3], dtype=np.float32)})


@pytest.mark.parametrize("n_rows", [1011, 4096])
def test_full_size_table_loads_fast(tmp_path, n_rows):
    table = _fast_random_table(n_rows)
    path = bench.save_table(table, tmp_path / "full.nhbt")
    floats = sum(a.size for a in table.metrics.values())
    times = {}
    for mmap in (False, True):
        start = time.perf_counter()
        loaded = bench.load_table(path, mmap=mmap)
        times[mmap] = time.perf_counter() - start
    print(f"\n{n_rows} rows, {floats / 1e6:.1f}M floats, "
          f"{pathlib.Path(path).stat().st_size / 1e6:.0f} MB: load {times[False]:.3f} s, "
          f"mmap {times[True]:.3f} s (checksums verified)")
    np.testing.assert_array_equal(loaded.metrics["test_time"], table.metrics["test_time"])
    assert tbl.FORMAT_VERSION == loaded.meta["format_version"]


def test_build_directory_or_table_file(small, tmp_path):
    from nhb.bench import build  # the builder writes the same file name

    assert build.TABLE_FILE == tbl.TABLE_FILE
    bench.save_table(small, tmp_path / tbl.TABLE_FILE)
    assert tbl.table_path(tmp_path) == tmp_path / "table.nhb"
    assert tbl.table_path(tmp_path / "table.nhb") == tmp_path / "table.nhb"
    _assert_same(small, bench.load_table(tmp_path))  # the directory
    _assert_same(small, bench.load_table(tmp_path / tbl.TABLE_FILE))  # the file
    assert bench.read_header(tmp_path)["meta"] == small.meta
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(bench.TableError, match=r"no table\.nhb \(expected .*unfinished/table\.nhb"):
        bench.load_table(empty)
