"""Dense storage of NAS-HPO-Bench-II results: the `Table` and its single-file format.

A table holds one row per trained cell (normally the official representative of each of the
1011 classes) and, per row, every learning rate x batch size x seed x epoch. Lookups for any of
the 4096 cells go through `Table.row_of_cell` (cell -> its own row if stored, else the row of
a stored member of its class, preferring the official representative; -1 if none).

File format (`FORMAT_VERSION` 1, one file, written atomically):
  bytes 0-7          magic `b"NHBTABLE"`
  bytes 8-15         little-endian uint64 H, the length of the JSON header
  bytes 16 .. 16+H   UTF-8 JSON header: format_version, meta, seeds, lrs, batch_sizes,
                     payload_bytes and `arrays` = [{name, dtype, shape, offset, nbytes, sha256}]
  payload            from the next 64-byte boundary; each array's raw C-order little-endian
                     bytes at `offset` (relative to the payload start, 64-byte aligned).
Array names: `metrics/<metric>`, `diverged`, `cells`, `extra/<name>`. Every array carries the
sha256 of its bytes, verified on load.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import pathlib
import struct
import warnings
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct as flax_struct

import nhb
from nhb._io import atomic_write, code_version  # re-exported: imported from here too
from nhb.space import cells as _cells
from nhb.space import nhb2
from nhb.train.engine import RUN_METRICS

FORMAT_VERSION = 1
MAGIC = b"NHBTABLE"
METRICS = RUN_METRICS  # the per-run metric columns, defined in nhb.train.engine
AVG_ACC_200 = "avg_acc_200"
TABLE_FILE = "table.nhb"  # a build directory's table (see `nhb.bench.build`)
TABLE_HELP = ("Table: a build directory (its table.nhb) or a table file (.nhb), as written by "
              "nhb.bench.build / save_table, or a folder of the official pickles (sha256-"
              "verified; 'unverified:DIR' accepts digests the manifest does not know).")
_ALIGN = 64


class TableError(ValueError):
    """A table (or official data) file is missing, corrupt, truncated or of another version."""


def make_meta(protocol: str, dataset: str = "cifar10", n_epochs: int = 12,
              **extra: Any) -> dict:
    """Standard table metadata.

    Args:
        protocol: name of the protocol / scale preset that produced the table.
        dataset: dataset name.
        n_epochs: epochs per run.
        **extra: anything else JSON-serialisable (builder settings, device, ...).

    Returns:
        Dict with format_version, protocol, dataset, code_version, n_epochs, created and extra.
    """
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return dict(format_version=FORMAT_VERSION, protocol=protocol, dataset=dataset,
                code_version=code_version(), n_epochs=int(n_epochs), created=created, **extra)


@flax_struct.dataclass
class JaxTable:
    """A table's arrays on device, as a pytree for jittable gathers.

    Attributes:
        metrics: metric name -> float32 [rows, lrs, bss, seeds, epochs].
        diverged: bool [rows, lrs, bss, seeds].
        row_of_cell: int32 [4096] row of each cell (-1 where its class is not stored).
        extra: name -> extra arrays (e.g. `avg_acc_200` [rows, lrs, bss]).
    """

    metrics: dict[str, jax.Array]
    diverged: jax.Array
    row_of_cell: jax.Array
    extra: dict[str, jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Table:
    """Dense NAS-HPO-Bench-II results.

    Attributes:
        metrics: each of `METRICS` -> float32 [rows, 8 lrs, 6 bss, seeds, epochs]; accuracies
            in %, times in seconds per epoch; NaN where unknown (e.g. losses of official data).
        diverged: bool [rows, 8, 6, seeds].
        cells: int32 [rows] cell index (0..4095) of each row; at most one row per cell.
        seeds: the training seeds (axis 3).
        lrs: learning-rate values (axis 1).
        batch_sizes: batch-size values (axis 2).
        meta: JSON-serialisable metadata (see `make_meta`).
        extra: optional extra arrays with leading axis rows, e.g. `avg_acc_200` [rows, 8, 6].
    """

    metrics: dict[str, np.ndarray]
    diverged: np.ndarray
    cells: np.ndarray
    seeds: tuple[int, ...] = nhb2.SEEDS
    lrs: tuple[float, ...] = nhb2.LRS
    batch_sizes: tuple[int, ...] = nhb2.BATCH_SIZES
    meta: dict = dataclasses.field(default_factory=dict)
    extra: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if set(self.metrics) != set(METRICS):
            raise ValueError(f"table metrics must be exactly {METRICS}; got {sorted(self.metrics)}")
        cells = np.asarray(self.cells, np.int32).reshape(-1)
        seeds = tuple(int(s) for s in self.seeds)
        lrs = tuple(float(v) for v in self.lrs)
        bss = tuple(int(v) for v in self.batch_sizes)
        metrics = {m: np.asarray(self.metrics[m], np.float32) for m in METRICS}
        shape = metrics[METRICS[0]].shape
        want = (len(cells), len(lrs), len(bss), len(seeds))
        if len(shape) != 5 or shape[:4] != want:
            raise ValueError(f"metric arrays must be [rows, lrs, bss, seeds, epochs] = "
                             f"[{', '.join(map(str, want))}, epochs]; got {shape}")
        for m, a in metrics.items():
            if a.shape != shape:
                raise ValueError(f"metric {m!r} has shape {a.shape}, expected {shape}")
        diverged = np.asarray(self.diverged, bool)
        if diverged.shape != want:
            raise ValueError(f"diverged has shape {diverged.shape}, expected {want}")
        if cells.size and (cells.min() < 0 or cells.max() >= nhb2.NUM_CELLS):
            raise ValueError(f"cell indices must be in 0..{nhb2.NUM_CELLS - 1}")
        if len(np.unique(cells)) != len(cells):
            raise ValueError("table cells must be unique (one row per cell)")
        extra = {k: np.asarray(v) for k, v in self.extra.items()}
        for k, v in extra.items():
            if v.shape[:1] != (len(cells),):
                raise ValueError(f"extra array {k!r} has shape {v.shape}; leading axis must be "
                                 f"rows ({len(cells)})")
        meta = dict(self.meta)
        meta["format_version"] = FORMAT_VERSION
        if meta.setdefault("n_epochs", shape[4]) != shape[4]:
            raise ValueError(f"meta n_epochs {meta['n_epochs']} != array epochs {shape[4]}")
        try:
            json.dumps(meta, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"table meta must be JSON-serialisable: {e}") from e
        for name, value in dict(metrics=metrics, diverged=diverged, cells=cells, seeds=seeds,
                                lrs=lrs, batch_sizes=bss, extra=extra, meta=meta).items():
            object.__setattr__(self, name, value)

    @property
    def n_rows(self) -> int:
        """Number of stored rows (cells)."""
        return len(self.cells)

    @property
    def n_seeds(self) -> int:
        """Number of seeds."""
        return len(self.seeds)

    @property
    def n_epochs(self) -> int:
        """Epochs per run."""
        return self.metrics[METRICS[0]].shape[4]

    @functools.cached_property
    def class_rows(self) -> np.ndarray:
        """int32 [1011]: the row storing each class (its representative if stored), else -1."""
        t = _cells.cell_tables()
        out = np.full(len(t.unique_codes), -1, np.int32)
        is_rep = t.representative[t.class_id[self.cells]] == self.cells
        for row in np.argsort(is_rep, kind="stable"):  # representatives written last, so win
            out[t.class_id[self.cells[row]]] = row
        out.setflags(write=False)
        return out

    @functools.cached_property
    def row_of_cell(self) -> np.ndarray:
        """int32 [4096]: the cell's own row if stored, else its class's row, else -1."""
        out = self.class_rows[_cells.cell_tables().class_id].astype(np.int32)
        out[self.cells] = np.arange(self.n_rows, dtype=np.int32)
        out.setflags(write=False)
        return out

    def seed_mean(self, metric: str, epoch: int = -1) -> np.ndarray:
        """Mean over seeds (NaN-aware) of one metric at one epoch: float32 [rows, lrs, bss]."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.metrics[metric][..., epoch], axis=-1)

    def to_jax(self, metrics: Sequence[str] | None = None) -> JaxTable:
        """Copies the arrays to the default device as a `JaxTable` pytree.

        Args:
            metrics: metric names to include (all of `METRICS` if None).

        Returns:
            The device pytree.
        """
        names = METRICS if metrics is None else tuple(metrics)
        return JaxTable(metrics={m: jnp.asarray(self.metrics[m]) for m in names},
                        diverged=jnp.asarray(self.diverged),
                        row_of_cell=jnp.asarray(self.row_of_cell),
                        extra={k: jnp.asarray(v) for k, v in self.extra.items()})

    def summary(self) -> dict:
        """Headline facts: size, divergence, accuracy range and the best configs.

        The best configs maximise the mean over seeds of the final-epoch valid (resp. test)
        accuracy and are given as official keys (code, lr, batch_size) with their accuracies.

        Returns:
            JSON-serialisable dict.
        """
        valid, test = self.seed_mean("valid_acc"), self.seed_mean("test_acc")
        avg200 = self.extra.get(AVG_ACC_200)

        def best(score: np.ndarray) -> dict | None:
            if not np.isfinite(score).any():
                return None
            row, lr, bs = np.unravel_index(int(np.nanargmax(score)), score.shape)
            out = dict(code=_cells.cell_tables().codes[self.cells[row]], lr=self.lrs[lr],
                       batch_size=self.batch_sizes[bs], valid_acc=float(valid[row, lr, bs]),
                       test_acc=float(test[row, lr, bs]))
            if avg200 is not None:
                out[AVG_ACC_200] = float(avg200[row, lr, bs])
            return out

        finite = test[np.isfinite(test)]
        acc_range = (dict(min=float(finite.min()), max=float(finite.max()),
                          mean=float(finite.mean())) if finite.size else None)
        return dict(
            protocol=self.meta.get("protocol"), dataset=self.meta.get("dataset"),
            rows=self.n_rows, classes=int((self.class_rows >= 0).sum()),
            seeds=list(self.seeds), epochs=self.n_epochs, configs=int(valid.size),
            runs=int(self.diverged.size), diverged_runs=int(self.diverged.sum()),
            final_test_acc=acc_range, best_by_valid=best(valid), best_by_test=best(test))

    def named_arrays(self) -> dict[str, np.ndarray]:
        """All arrays under their file names (`metrics/<m>`, `diverged`, `cells`, `extra/<k>`)."""
        out = {f"metrics/{m}": self.metrics[m] for m in METRICS}
        out.update(diverged=self.diverged, cells=self.cells)
        out.update({f"extra/{k}": v for k, v in sorted(self.extra.items())})
        return out


# ----------------------------------------------------------------------------- file format


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(a.reshape(-1).view(np.uint8)).hexdigest()


def _parallel(fn: Callable, items: list) -> list:
    if len(items) <= 1:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))  # hashlib releases the GIL on large buffers


def save_table(table: Table, path: str | os.PathLike) -> pathlib.Path:
    """Saves a table to one file, atomically (see the module docstring for the format).

    Args:
        table: the table.
        path: destination file (parent directories are created).

    Returns:
        The path written.
    """
    arrays = {k: np.ascontiguousarray(v, v.dtype.newbyteorder("<"))
              for k, v in table.named_arrays().items()}
    digests = _parallel(_sha256, list(arrays.values()))
    entries, offset = [], 0
    for (name, a), digest in zip(arrays.items(), digests, strict=True):
        entries.append(dict(name=name, dtype=a.dtype.str, shape=list(a.shape), offset=offset,
                            nbytes=a.nbytes, sha256=digest))
        offset = _align(offset + a.nbytes)
    header = dict(format_version=FORMAT_VERSION, meta=table.meta, seeds=list(table.seeds),
                  lrs=list(table.lrs), batch_sizes=list(table.batch_sizes),
                  payload_bytes=offset, arrays=entries)
    head = json.dumps(header, indent=1).encode()
    start = _align(16 + len(head))

    def write(f: BinaryIO) -> None:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head)
        f.write(b"\0" * (start - f.tell()))
        for entry, a in zip(entries, arrays.values(), strict=True):
            f.write(b"\0" * (start + entry["offset"] - f.tell()))
            f.write(a.reshape(-1).view(np.uint8).data)
        f.write(b"\0" * (start + offset - f.tell()))

    return atomic_write(path, write)


_HINT = "rebuild the table or copy it again"


def _read_header(f: BinaryIO, path: pathlib.Path) -> tuple[dict, int]:
    size = os.fstat(f.fileno()).st_size
    first = f.read(16)
    if first[:len(MAGIC)] != MAGIC[:len(first)]:
        raise TableError(f"{path} is not an nhb table file (no {MAGIC!r} magic); was it "
                         "written by nhb.bench.save_table?")
    if len(first) < 16:
        raise TableError(f"table file {path} is truncated ({size} bytes); {_HINT}")
    (n,) = struct.unpack("<Q", first[8:])
    if 16 + n > size:
        raise TableError(f"table file {path} is truncated: the header needs {16 + n} bytes "
                         f"but the file has {size}; {_HINT}")
    try:
        header = json.loads(f.read(n))
        version = header["format_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise TableError(f"table file {path} has a corrupt header ({e}); {_HINT}") from e
    if version != FORMAT_VERSION:
        written = (header.get("meta") or {}).get("code_version", "unknown")
        raise TableError(
            f"table file {path} has format_version {version!r} but this nhb "
            f"({nhb.__version__}) reads version {FORMAT_VERSION}; rebuild or convert the table "
            f"with this nhb, or load it with the nhb version that wrote it ({written})")
    start = _align(16 + n)
    try:
        need = start + int(header["payload_bytes"])
    except (KeyError, TypeError, ValueError) as e:
        raise TableError(f"table file {path} has a corrupt header ({e}); {_HINT}") from e
    if size != need:
        state = "truncated" if size < need else "corrupt (it has trailing bytes)"
        raise TableError(f"table file {path} is {state}: expected {need} bytes, found {size}; "
                         f"{_HINT}")
    return header, start


def table_path(path: str | os.PathLike) -> pathlib.Path:
    """The table file of a `--table` argument: a build directory (its `TABLE_FILE`) or a file.

    Args:
        path: a build directory or a table file.

    Returns:
        The table file's path.

    Raises:
        TableError: the path does not exist, or is a directory without `TABLE_FILE`.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        if not (path / TABLE_FILE).is_file():
            raise TableError(f"{path} is a directory but not a finished build directory: it has "
                             f"no {TABLE_FILE} (expected {path / TABLE_FILE}); finish the build "
                             "or pass the table file itself")
        return path / TABLE_FILE
    if not path.exists():
        raise TableError(f"table file {path} does not exist; check the path, or build/download "
                         "the table first")
    return path


def _open(path: str | os.PathLike) -> tuple[BinaryIO, pathlib.Path]:
    path = table_path(path)
    if not path.is_file():
        raise TableError(f"table path {path} is not a regular file")
    return open(path, "rb"), path


def read_header(path: str | os.PathLike) -> dict:
    """Reads and checks a table file's JSON header (cheap; no arrays are read).

    Args:
        path: table file, or a build directory (its `TABLE_FILE`).

    Returns:
        The header dict (`meta` holds the table metadata, `arrays` the array index).

    Raises:
        TableError: missing file, not a table, truncated/corrupt header, other format version.
    """
    f, path = _open(path)
    with f:
        return _read_header(f, path)[0]


def load_table(path: str | os.PathLike, *, mmap: bool = False, verify: bool = True) -> Table:
    """Loads a table saved by `save_table`.

    Args:
        path: table file, or a build directory (its `TABLE_FILE`; see `table_path`).
        mmap: memory-map the arrays read-only instead of reading them into memory.
        verify: check every array's sha256 against the header (recommended; fast).

    Returns:
        The table.

    Raises:
        TableError: missing, truncated or corrupt file, or a different format version.
    """
    f, path = _open(path)
    with f:
        header, start = _read_header(f, path)
        size = int(header["payload_bytes"])
        if mmap and size:
            buf = np.memmap(f, dtype=np.uint8, mode="r", offset=start, shape=(size,))
        else:
            buf = np.empty(size, np.uint8)
            f.seek(start)
            view, got = memoryview(buf), 0
            while got < size and (k := f.readinto(view[got:])):
                got += k
    arrays = {}
    try:
        for e in header["arrays"]:
            raw = buf[e["offset"]:e["offset"] + e["nbytes"]]
            arrays[e["name"]] = raw.view(np.dtype(e["dtype"])).reshape(e["shape"])
    except (ValueError, TypeError, KeyError) as err:
        raise TableError(f"table file {path} has an inconsistent array index ({err}); "
                         f"{_HINT}") from err
    if verify:
        entries = header["arrays"]
        digests = _parallel(_sha256, [arrays[e["name"]] for e in entries])
        bad = [e["name"] for e, d in zip(entries, digests, strict=True) if d != e["sha256"]]
        if bad:
            raise TableError(f"table file {path} is corrupt: sha256 checksum mismatch in {bad} "
                             "(damaged after writing); copy it again or rebuild the table")
    try:
        return Table(
            metrics={m: arrays[f"metrics/{m}"] for m in METRICS},
            diverged=arrays["diverged"], cells=arrays["cells"], seeds=tuple(header["seeds"]),
            lrs=tuple(header["lrs"]), batch_sizes=tuple(header["batch_sizes"]),
            meta=header["meta"],
            extra={k[6:]: v for k, v in arrays.items() if k.startswith("extra/")})
    except (KeyError, ValueError) as err:
        raise TableError(f"table file {path} is inconsistent ({err}); {_HINT}") from err


# ----------------------------------------------------------------------------- fakes
