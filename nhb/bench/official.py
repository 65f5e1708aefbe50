"""The official NAS-HPO-Bench-II data files: import into and export from a `Table`.

See docs/protocol.md §5.

Schema (as read by the official client `nashpobench2api.NASHPOBench2API(data_dir)`, which
loads `bench12.pkl`, `cellinfo.pkl` and `avgaccs200.pkl` from `data_dir` — all three must
exist):
- `bench12[col][(hash, lr, batch_size, seed)]`, columns `lr`, `batch_size`, `seed`,
  `{train,valid,test}_acc_{0..11}` (%), `{train,valid,test}_time_{0..11}` (s),
  `total_train_time`, `total_trainval_time`, `total_test_time`.
- `cellinfo['hash'][cellcode]` for all 4096 codes; cells of one class share one hash.
- `avgaccs200['avg_acc'][(hash, lr, batch_size)]`: mean 200-epoch test accuracy.

The client's rules (read from its source, v1.0.0; the query API must follow them):
`query_by_key(code, lr, bs, epoch=12, mode='valid', iepoch=None, seed=None)` with seed
`self.seed` (the smallest seed, 222, unless `seed`/`set_seed` changed it; sticky) returns
`acc = bench12[f'{mode}_acc_{iepoch-1}']` (iepoch 1..12, default 12, 1-based) and cost:
- iepoch == 12: train -> total_train_time; valid -> total_trainval_time;
  test -> total_trainval_time + total_test_time.
- iepoch < 12: the sum over epochs 0..iepoch-1 of train_time (train mode), train_time +
  valid_time (valid), train_time + valid_time + test_time (test).
- epoch=200: `acc = avgaccs200['avg_acc'][(hash, lr, bs)]`, cost None (not logged, mode
  ignored). Each 12-epoch query adds its cost to `total_cost` (repeats are charged again).
`query_by_index(cell_idx, lr_idx, bs_idx, epoch, iepoch, seed)` always uses mode 'valid'.

Totals written by `export_official` are the left-to-right float64 sums in the client's own
order (all train times, then all valid times), so a full query costs exactly what a partial
query extended to 12 epochs would. `import_official` keeps the file's totals in
`Table.extra` (`total_train_time`, `total_trainval_time`, `total_test_time`, [rows, 8, 6,
seeds]) so that they round-trip exactly even if they are not the sums of the epoch times.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import pathlib
import pickle
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from nhb.bench.table import (
    AVG_ACC_200,
    METRICS,
    Table,
    TableError,
    atomic_write,
    load_table,
    make_meta,
)
from nhb.space import cells as _cells
from nhb.space import nhb2

SPLITS = ("train", "valid", "test")
TOTALS = ("total_train_time", "total_trainval_time", "total_test_time")
FILES = ("bench12.pkl", "cellinfo.pkl", "avgaccs200.pkl")
OFFICIAL_EPOCHS = 12
_SAFE_GLOBALS = {
    ("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "float", "int",
                              "str", "bool", "complex", "bytes", "bytearray")
} | {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
     for n in ("scalar", "_reconstruct")} | {
    ("numpy", "dtype"), ("numpy", "ndarray"), ("collections", "OrderedDict"),
    ("collections", "defaultdict"), ("_codecs", "encode")}


def official_columns(n_epochs: int = 12) -> tuple[str, ...]:
    """The `bench12` column names, in the order `export_official` writes them."""
    per_epoch = tuple(f"{s}_{kind}_{i}" for kind in ("acc", "time") for s in SPLITS
                      for i in range(n_epochs))
    return ("lr", "batch_size", "seed", *per_epoch, *TOTALS)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses the cyclic GC, which otherwise rescans millions of new key tuples repeatedly."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def class_hashes() -> tuple[str, ...]:
    """The hash string of each of the 1011 classes (the graph hash of its representative)."""
    t = _cells.cell_tables()
    return tuple(_cells.graph_hash(_cells.compress(tuple(int(d) for d in t.digits[c])))
                 for c in t.representative)


def check_exportable(table: Table) -> None:
    """Raises a ValueError explaining why a table cannot be exported (not 12 epochs).

    Args:
        table: the table.
    """
    if table.n_epochs != OFFICIAL_EPOCHS:
        raise ValueError(
            f"cannot export to the official NAS-HPO-Bench-II format: it holds the "
            f"{OFFICIAL_EPOCHS}-epoch protocol (bench12.pkl columns *_0..*_11 and 12-epoch "
            f"totals), but this table has {table.n_epochs} epochs (protocol "
            f"{table.meta.get('protocol')!r}); build a {OFFICIAL_EPOCHS}-epoch table to export "
            "it (query, search and analysis work on any number of epochs)")


def export_official(table: Table | str | os.PathLike, out_dir: str | os.PathLike,
                    protocol: int = 4) -> dict[str, pathlib.Path]:
    """Writes a table as the official pickles, readable by `nashpobench2api`.

    See `official_dicts` for the content; each file is written atomically. Note that the
    official client refuses to start unless all three files exist. A sub-grid table writes
    only its classes, learning rates and batch sizes (the client raises KeyError for others).

    Args:
        table: a 12-epoch table, or its path (a build directory or a table file).
        out_dir: directory to write into (created).
        protocol: pickle protocol.

    Returns:
        File name -> path of the files written.

    Raises:
        ValueError: the table does not have 12 epochs (`check_exportable`); `TableError` (a
            ValueError) for a bad path.
    """
    if not isinstance(table, Table):
        table = load_table(table)
    check_exportable(table)
    with _gc_paused():
        return {name: atomic_write(pathlib.Path(out_dir) / name,
                                   lambda f, obj=obj: pickle.dump(obj, f, protocol=protocol))
                for name, obj in official_dicts(table).items()}


def official_dicts(table: Table) -> dict[str, dict]:
    """The official data of a table, in memory: file name -> the dict that file holds.

    One entry per stored class (`Table.class_rows`), keyed by its class hash
    (`class_hashes`); losses and the diverged flags are dropped (the schema has none).
    `avgaccs200.pkl` is included only when the table has `extra["avg_acc_200"]` (its finite
    entries). Totals come from `extra` when present (an imported table), else are computed.

    Args:
        table: a 12-epoch table.

    Returns:
        {"bench12.pkl": ..., "cellinfo.pkl": ..., ["avgaccs200.pkl": ...]}.
    """
    check_exportable(table)
    with _gc_paused():
        return _official_dicts(table)


def _official_dicts(table: Table) -> dict[str, dict]:
    t = _cells.cell_tables()
    hashes = class_hashes()
    classes = np.nonzero(table.class_rows >= 0)[0]
    rows = table.class_rows[classes]
    lrs, bss, seeds = table.lrs, table.batch_sizes, table.seeds
    keys = [(hashes[c], lr, bs, s) for c in classes for lr in lrs for bs in bss for s in seeds]
    bench: dict[str, dict] = {"lr": {k: k[1] for k in keys},
                              "batch_size": {k: k[2] for k in keys},
                              "seed": {k: k[3] for k in keys}}
    for kind in ("acc", "time"):
        for split in SPLITS:
            values = table.metrics[f"{split}_{kind}"][rows]
            for i in range(12):
                bench[f"{split}_{kind}_{i}"] = dict(zip(keys, values[..., i].reshape(-1).tolist(),
                                                        strict=True))
    for name, values in _totals(table, rows).items():
        bench[name] = dict(zip(keys, values.reshape(-1).tolist(), strict=True))
    cellinfo = {"hash": {code: hashes[c] for code, c in zip(t.codes, t.class_id, strict=True)}}
    out = {"bench12.pkl": bench, "cellinfo.pkl": cellinfo}
    avg = table.extra.get(AVG_ACC_200)
    if avg is not None:
        avg = avg[rows]
        out["avgaccs200.pkl"] = {"avg_acc": {
            (hashes[c], lr, bs): float(avg[k, i, j]) for k, c in enumerate(classes)
            for i, lr in enumerate(lrs) for j, bs in enumerate(bss) if np.isfinite(avg[k, i, j])}}
    return out


def _totals(table: Table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The three totals [rows, lrs, bss, seeds] (float64): stored ones, else client-order sums."""
    if all(name in table.extra for name in TOTALS):
        return {name: np.asarray(table.extra[name], np.float64)[rows] for name in TOTALS}
    times = {s: table.metrics[f"{s}_time"][rows].astype(np.float64) for s in SPLITS}
    seq = lambda *arrays: np.cumsum(np.concatenate(arrays, axis=-1), axis=-1)[..., -1]
    return {"total_train_time": seq(times["train"]),
            "total_trainval_time": seq(times["train"], times["valid"]),
            "total_test_time": seq(times["test"])}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_pickle(src: str | os.PathLike | Mapping, what: str, trusted: bool = False) -> Mapping:
    """Loads one official pickle (or passes a dict through), with clear errors.

    Args:
        src: path to the file, or the already-loaded dict.
        what: file role for messages (e.g. "bench12.pkl").
        trusted: allow arbitrary pickled globals (only for files you trust); by default only
            plain containers, numbers, strings and NumPy scalars are accepted.

    Returns:
        The loaded mapping.
    """
    if isinstance(src, Mapping):
        return src
    path = pathlib.Path(src)
    if not path.is_file():
        raise TableError(f"official {what} not found at {path}; download the NAS-HPO-Bench-II "
                         "API data (see github.com/yoichii/nashpobench2api) and pass its path")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f) if trusted else _SafeUnpickler(f).load()
    except pickle.UnpicklingError as e:
        if "refusing" in str(e):
            raise TableError(f"{path} ({what}) holds non-data objects ({e}); pass trusted=True "
                             "only if you trust the file") from e
        raise TableError(f"{path} ({what}) is corrupt or truncated ({e}); download it "
                         "again") from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise TableError(f"{path} ({what}) is corrupt or truncated ({type(e).__name__}: {e}); "
                         "download it again") from e
    if not isinstance(obj, Mapping):
        raise TableError(f"{path} ({what}) holds a {type(obj).__name__}, expected a dict")
    return obj


def _hash_to_class(cellinfo: Mapping) -> dict[Any, int]:
    """Maps the official hashes to our class ids, checking that the partitions agree."""
    t = _cells.cell_tables()
    table = cellinfo.get("hash")
    if not isinstance(table, Mapping):
        raise TableError("cellinfo has no 'hash' dict (expected cellinfo['hash'][cellcode])")
    missing = [c for c in t.codes if c not in table]
    if missing:
        raise TableError(f"cellinfo['hash'] lacks {len(missing)} of the 4096 cell codes, "
                         f"e.g. {missing[:3]}")
    rep_hash = [table[t.unique_codes[k]] for k in range(len(t.unique_codes))]
    split = [c for i, c in enumerate(t.codes) if table[c] != rep_hash[t.class_id[i]]]
    if split or len(set(rep_hash)) != len(rep_hash):
        raise TableError(
            "cellinfo's hash classes disagree with nhb's 1011-class canonicalisation (cells "
            f"whose hash differs from their class representative's: {split[:5]}; distinct "
            f"representative hashes: {len(set(rep_hash))}); the file may be from another "
            "benchmark version")
    return {h: k for k, h in enumerate(rep_hash)}


def import_official(bench12_pkl: str | os.PathLike | Mapping,
                    cellinfo_pkl: str | os.PathLike | Mapping,
                    avgaccs200_pkl: str | os.PathLike | Mapping | None = None, *,
                    trusted: bool = False, meta: dict | None = None) -> Table:
    """Reads the official pickles into a `Table` (one row per class present, class order).

    Losses are NaN (the official data has none); a run is marked diverged when any of its
    accuracies is not finite; runs missing from the file are NaN (counted in
    `meta["missing_runs"]`). The file's totals go to `extra` (see the module docstring).

    Args:
        bench12_pkl: path to `bench12.pkl` (or its loaded dict).
        cellinfo_pkl: path to `cellinfo.pkl` (or its loaded dict).
        avgaccs200_pkl: optional path to `avgaccs200.pkl` -> `extra["avg_acc_200"]`.
        trusted: see `load_pickle`.
        meta: extra metadata entries.

    Returns:
        The table.
    """
    with _gc_paused():
        return _import(bench12_pkl, cellinfo_pkl, avgaccs200_pkl, trusted, meta)


def _import(bench12_pkl: Any, cellinfo_pkl: Any, avgaccs200_pkl: Any, trusted: bool,
            meta: dict | None) -> Table:
    bench = load_pickle(bench12_pkl, "bench12.pkl", trusted)
    hash_to_class = _hash_to_class(load_pickle(cellinfo_pkl, "cellinfo.pkl", trusted))
    n_epochs = 0
    while f"train_acc_{n_epochs}" in bench:
        n_epochs += 1
    need = [c for c in official_columns(n_epochs) if c not in bench]
    if n_epochs == 0 or need:
        raise TableError(f"bench12 lacks columns {need[:6] or ['train_acc_0']}; is it the "
                         "official bench12.pkl?")
    keys = list(bench["lr"].keys())
    try:
        classes = sorted({hash_to_class[k[0]] for k in keys})
        seeds = tuple(sorted({int(k[3]) for k in keys}))
    except (KeyError, IndexError, TypeError) as e:
        raise TableError(f"bench12 has a key not of the form (cell-class hash, lr, batch_size, "
                         f"seed) for a known class: {e!r}") from e
    row_of_class = {c: r for r, c in enumerate(classes)}
    lr_ix, bs_ix = _value_index(nhb2.LRS), _value_index(nhb2.BATCH_SIZES)
    seed_ix = {s: i for i, s in enumerate(seeds)}
    try:
        index = tuple(np.array(v, np.intp) for v in zip(
            *((row_of_class[hash_to_class[h]], lr_ix(lr), bs_ix(bs), seed_ix[int(s)])
              for h, lr, bs, s in keys), strict=True))
    except (KeyError, ValueError, TypeError) as e:
        raise TableError(f"bench12 has a key (hash, lr, batch_size, seed) with a learning rate "
                         f"or batch size outside the benchmark's grid, or malformed: {e!r}") from e
    grid = (len(classes), nhb2.NUM_LRS, nhb2.NUM_BS, len(seeds))

    def column(name: str) -> np.ndarray:
        col = bench[name]
        try:
            if len(col) == len(keys) and list(col) == keys:  # same key order: skip lookups
                values = np.fromiter(col.values(), np.float64, len(keys))
            else:
                values = np.fromiter(map(col.__getitem__, keys), np.float64, len(keys))
        except KeyError as e:
            raise TableError(f"bench12[{name!r}] lacks the run {e}") from e
        except (ValueError, TypeError) as e:
            raise TableError(f"bench12[{name!r}] holds a non-numeric value ({e})") from e
        out = np.full(grid, np.nan)
        out[index] = values
        return out

    metrics = {m: np.full((*grid, n_epochs), np.nan, np.float32) for m in METRICS}
    for kind in ("acc", "time"):
        for split in SPLITS:
            for i in range(n_epochs):
                metrics[f"{split}_{kind}"][..., i] = column(f"{split}_{kind}_{i}")
    present = np.zeros(grid, bool)
    present[index] = True
    accs = np.concatenate([metrics[f"{s}_acc"] for s in SPLITS], axis=-1)
    diverged = present & ~np.isfinite(accs).all(axis=-1)
    extra = {name: column(name) for name in TOTALS}
    files = [str(p) for p in (bench12_pkl, cellinfo_pkl, avgaccs200_pkl)
             if isinstance(p, str | os.PathLike)]
    if avgaccs200_pkl is not None:
        avg = load_pickle(avgaccs200_pkl, "avgaccs200.pkl", trusted).get("avg_acc")
        if not isinstance(avg, Mapping):
            raise TableError("avgaccs200 has no 'avg_acc' dict (expected "
                             "avgaccs200['avg_acc'][(hash, lr, batch_size)])")
        extra[AVG_ACC_200] = np.full(grid[:3], np.nan, np.float32)
        try:
            for (h, lr, bs), value in avg.items():
                c = hash_to_class.get(h)
                if c in row_of_class:
                    extra[AVG_ACC_200][row_of_class[c], lr_ix(lr), bs_ix(bs)] = value
        except (KeyError, ValueError, TypeError) as e:
            raise TableError(f"avgaccs200 has a key or value outside the schema: {e!r}") from e
    t = _cells.cell_tables()
    return Table(metrics=metrics, diverged=diverged, cells=t.representative[classes],
                 seeds=seeds, extra=extra,
                 meta=make_meta("official", n_epochs=n_epochs, source="NAS-HPO-Bench-II "
                                "official pickles", files=files,
                                missing_runs=int((~present).sum()), **(meta or {})))


def _value_index(values: tuple) -> Any:
    exact = {v: i for i, v in enumerate(values)}

    def index(v: Any) -> int:
        if v in exact:
            return exact[v]
        for i, c in enumerate(values):
            if np.isclose(float(v), c, rtol=1e-6, atol=0):
                return i
        raise KeyError(v)

    return index
