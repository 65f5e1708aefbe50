"""A drop-in `NASHPOBench2API` (the official client's interface) over any nhb table.

    from nhb.bench.facade import NASHPOBench2API
    api = NASHPOBench2API("path/to/build_dir", verbose=False)   # or a Table, a .nhb file, ...
    key = api.get_random_key(); acc, cost = api.query_by_key(**key); api.get_results()

The class mirrors `nashpobench2api.NASHPOBench2API` (v1.0.0; its rules are listed in
`nhb.bench.official`): the same public methods and attributes, arguments, defaults, return
values and side effects (the log lists `acc_trans`, `key_trans`, `best_*`, `total_cost` and
`total_cost_trans`, the sticky seed of `set_seed` / `seed=`, the DEBUG line per logged query
and the INFO summary of `get_results`), and the same errors for bad input (ValueError for keys
and seeds, AssertionError wrapping a ValueError for `mode` / `iepoch`, KeyError for an
iepoch the data has no column for, IndexError for indices). Queried on a table it answers
exactly what the client answers on that table's `export_official` pickles: the same Python
floats, and costs summed in the client's order (the full-query totals of
`nhb.bench.official`, partial costs by the builtin `sum` over the same values).

Differences, all deliberate:
- the first argument is an nhb `Table` or a path in `nhb.bench.cli.load_table_arg` form (a
  build directory, a table file, a folder of the official pickles, `unverified:DIR`,
  'random'); the official folder is read through nhb's verified, cached conversion, which
  stores accuracies and per-epoch times as float32 (full-query totals stay float64);
- queries read the table's arrays; the official dicts (`bench12`, `cellinfo`,
  `avgaccs200`) are built only if those attributes are read;
- a cell class, a run or a 200-epoch accuracy the table does not hold raises
  `NotInTableError` (a KeyError, as the client's dict lookup raises, but naming what is
  missing); a run is missing when it has no accuracy and is not marked diverged (runs absent
  from imported pickles), and learning rates, batch sizes and seeds without any run are left
  out of `lrs`, `batch_sizes`, `seeds` (the client lists the values its pickles hold);
- cells share their class's row (`Table.class_rows`, as exported) even where the table
  stores a non-representative member separately;
- with `logger=None` the default logger (`nhb.bench.facade`) gets one stream handler, not one
  more per instance; DEBUG lines are formatted only when DEBUG is enabled.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from logging import Logger
from typing import Any

import numpy as np

from nhb.bench.official import OFFICIAL_EPOCHS, SPLITS, _totals, class_hashes, official_dicts
from nhb.bench.table import AVG_ACC_200, Table
from nhb.space import cells as _cells

_MODE_IX = {m: i for i, m in enumerate(SPLITS)}
_HEADER = f'   {"valid acc":<8}   {"cost":<8}    {"cellcode"} {"lr":<7} {"batch_size":<3}'
_HINT = ("HINT: pass an nhb Table, a build directory, a table file (.nhb) or a folder of the "
         "official pickles ('unverified:DIR' for files the manifest does not know), like "
         'NASHPOBench2API("path/to/data")')


class NotInTableError(KeyError):
    """The queried cell class, run or 200-epoch accuracy is not stored in the table."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NASHPOBench2API:
    """The official client's interface over an nhb table (see the module docstring).

    Attributes:
        table: the nhb table answering the queries.
        cellcodes, lrs, batch_sizes, seeds, epochs, seed: as the client's.
    """

    def __init__(self, data_dir: Table | str | os.PathLike = "data", seed: int | None = None,
                 logger: Logger | None = None, verbose: bool = True):
        """Loads the table and sets up the search space and the log.

        Args:
            data_dir: an nhb `Table`, or a path as `nhb.bench.cli.load_table_arg` takes it.
            seed: the training seed queries read (default the smallest); sticky.
            logger: where the query log goes (default a stream logger, `nhb.bench.facade`).
            verbose: log every query at DEBUG (else only `get_results` at INFO).
        """
        self.data_dir = data_dir
        self.logger = logger
        self.verbose = verbose
        if logger is None:
            self.logger = logging.getLogger(__name__)
            if not self.logger.handlers:
                self.logger.addHandler(logging.StreamHandler())
            self.logger.propagate = False
        try:
            if isinstance(data_dir, Table):
                table = data_dir
            else:
                from nhb.bench.cli import load_table_arg

                table = load_table_arg(os.fspath(data_dir))[0]
            self._load(table)
        except Exception:
            self.logger.error(_HINT)
            raise
        self.cellcodes = sorted(_cells.cell_tables().codes)
        self.lrs = sorted(self._lr_ix)
        self.batch_sizes = sorted(self._bs_ix)
        self.seeds = sorted(self._seed_ix)
        self.epochs = [12, 200]
        self._init_logdata()
        if seed:
            self.set_seed(seed)
        else:
            self.seed = self.seeds[0]

    def _load(self, table: Table) -> None:
        """Indexes the table: key -> array positions, and the per-query arrays."""
        if table.n_epochs != OFFICIAL_EPOCHS:
            raise ValueError(
                f"NASHPOBench2API answers the {OFFICIAL_EPOCHS}-epoch protocol (iepoch "
                f"1..{OFFICIAL_EPOCHS}), but this table has {table.n_epochs} epochs (protocol "
                f"{table.meta.get('protocol')!r}); use nhb.bench.Benchmark for it")
        self.table = table
        t = _cells.cell_tables()
        rows = table.class_rows[t.class_id]  # as exported: one row per class, for all members
        self._row_of_code = dict(zip(t.codes, rows.tolist(), strict=True))
        self._code_ix = {c: i for i, c in enumerate(t.codes)}
        m = table.metrics
        # [rows, lrs, bss, seeds, mode (train, valid, test), epoch]
        self._acc = np.stack([m[f"{s}_acc"] for s in SPLITS], axis=-2)
        # a run is held unless it has no accuracy at all and is not marked diverged (a run
        # missing from imported pickles); lrs, batch sizes and seeds without runs are not
        # in the search space (the client lists only the values its data holds)
        self._held = np.isfinite(self._acc).any(axis=(-2, -1)) | table.diverged
        held = lambda axis, values: {v: i for (i, v), ok in zip(
            enumerate(values), self._held.any(axis=axis), strict=True) if ok}
        self._lr_ix = held((0, 2, 3), table.lrs)
        self._bs_ix = held((0, 1, 3), table.batch_sizes)
        self._seed_ix = held((0, 1, 2), table.seeds)
        self._time = np.stack([m[f"{s}_time"] for s in SPLITS], axis=-2)
        tot = _totals(table, np.arange(table.n_rows))
        trainval = tot["total_trainval_time"]
        # [rows, lrs, bss, seeds, mode]: the client's full-query cost per mode (float64)
        self._full = np.stack([tot["total_train_time"], trainval,
                               trainval + tot["total_test_time"]], axis=-1)
        avg = table.extra.get(AVG_ACC_200)
        self._avg = None if avg is None else np.asarray(avg)

    def _init_logdata(self) -> None:
        self.acc_trans: list = []
        self.best_acc: Any = -1
        self.best_acc_trans: list = []
        self.total_cost = 0.0
        self.total_cost_trans: list = []
        self.best_cost: Any = None
        self.key_trans: list = []
        self.best_key: dict | None = None
        self.best_key_trans: list = []
        self.logger.setLevel(logging.DEBUG if self.verbose else logging.INFO)

    def __len__(self) -> int:
        return len(self.cellcodes) * len(self.lrs) * len(self.batch_sizes)

    def __str__(self) -> str:
        return "NAS-HPO-Bench-II"

    # ------------------------------------------------------------------------- the dicts

    @functools.cached_property
    def _official(self) -> dict[str, dict]:
        return official_dicts(self.table)

    @property
    def bench12(self) -> dict:
        """The client's `bench12` dict of this table (built on first use; large)."""
        return self._official["bench12.pkl"]

    @property
    def cellinfo(self) -> dict:
        """The client's `cellinfo` dict (`{'hash': {cellcode: class hash}}`)."""
        return self._official["cellinfo.pkl"]

    @property
    def avgaccs200(self) -> dict:
        """The client's `avgaccs200` dict (AttributeError if the table has no avg_acc_200)."""
        if "avgaccs200.pkl" not in self._official:
            raise AttributeError(f"this table has no 200-epoch accuracies "
                                 f"(extra[{AVG_ACC_200!r}]), so no avgaccs200")
        return self._official["avgaccs200.pkl"]

    # ------------------------------------------------------------------------- keys

    def get_key_from_idx(self, idx: int) -> dict:
        """The key {'cellcode', 'lr', 'batch_size'} of a flat index (the client's formula)."""
        return {
            "cellcode": self.cellcodes[int(idx / (len(self.lrs) * len(self.batch_sizes)))],
            "lr": self.lrs[int(idx / len(self.batch_sizes)) % len(self.lrs)],
            "batch_size": self.batch_sizes[idx % len(self.batch_sizes)],
        }

    def get_idx_from_key(self, key: dict) -> int:
        """The flat index of a key (ValueError '... is not in list' for unknown values)."""
        cellidx = self.cellcodes.index(key["cellcode"])
        lridx = self.lrs.index(key["lr"])
        batchidx = self.batch_sizes.index(key["batch_size"])
        n_hp = len(self.lrs) * len(self.batch_sizes)
        return cellidx * n_hp + lridx * len(self.batch_sizes) + batchidx

    def __getitem__(self, idx: int) -> tuple[float, float | None]:
        return self.query_by_key(**self.get_key_from_idx(idx))

    def get_random_key(self) -> dict:
        """A uniform random key, drawn with Python's `random` as the client draws it."""
        cellcode = random.choice(self.cellcodes)
        lr = random.choice(self.lrs)
        batch_size = random.choice(self.batch_sizes)
        return {"cellcode": cellcode, "lr": lr, "batch_size": batch_size}

    def get_search_space(self) -> tuple[list, list, list]:
        """(cellcodes, lrs, batch_sizes): the lists themselves, as the client returns them."""
        return self.cellcodes, self.lrs, self.batch_sizes

    def set_seed(self, seed: int) -> None:
        """Makes `seed` the seed of later queries (ValueError if the data has no such seed)."""
        if seed in self.seeds:
            self.seed = seed
        else:
            raise ValueError(f"choose a seed value from {self.seeds}.")

    def _cellcode2hash(self, cellcode: str) -> str:
        return class_hashes()[_cells.cell_tables().class_id[self._code_ix[cellcode]]]

    def _check_key(self, cellcode: str, lr: float, batch_size: int,
                   epoch: int) -> tuple[int, int, int]:
        """The client's key checks (same order and messages); returns (row, lr, bs) slots."""
        try:
            row = self._row_of_code[cellcode]
        except (KeyError, TypeError):
            raise ValueError(f"choose a cellcode {cellcode} from search space.") from None
        try:
            li = self._lr_ix[lr]
        except (KeyError, TypeError):
            raise ValueError(f"choose lr from {self.lrs}.") from None
        try:
            bi = self._bs_ix[batch_size]
        except (KeyError, TypeError):
            raise ValueError(f"choose batch size from {self.batch_sizes}.") from None
        if epoch not in self.epochs:
            raise ValueError(f"choose epoch from {self.epochs}.")
        return row, li, bi

    def _missing(self, cellcode: str, what: str | None = None) -> NotInTableError:
        """The error for a cell class (or, with `what`, a value) the table does not hold."""
        t = _cells.cell_tables()
        k = t.class_id[self._code_ix[cellcode]]
        cell = f"cell {cellcode!r} (class {k}, representative {t.unique_codes[k]!r})"
        if what is not None:
            return NotInTableError(f"{what} of {cell} is not in this table")
        held = int((self.table.class_rows >= 0).sum())
        return NotInTableError(f"the cell class of {cell} is not in this table; it holds "
                               f"{held} of {len(t.unique_codes)} cell classes")

    # ------------------------------------------------------------------------- queries

    def query_by_index(self, cell_idx: int, lr_idx: int, batch_size_idx: int,
                       epoch: int | str = 12, iepoch: int | None = None,
                       seed: int | None = None) -> tuple[float, float | None]:
        """`query_by_key` of the indexed values, in mode 'valid' (as the client).

        Returns:
            (accuracy, cost), as `query_by_key`.
        """
        cellcode = self.cellcodes[cell_idx]
        lr = self.lrs[lr_idx]
        batch_size = self.batch_sizes[batch_size_idx]
        if seed:
            self.set_seed(seed)
        return self.query_by_key(cellcode, lr, batch_size, epoch=epoch, iepoch=iepoch)

    def query_by_key(self, cellcode: str, lr: float, batch_size: int, epoch: int | str = 12,
                     mode: str = "valid", iepoch: int | None = None, seed: int | None = None,
                     enable_log: bool = True) -> tuple[float, float | None]:
        """One query, answered and charged as the official client does.

        Args:
            cellcode: official cell code 'A|BC|DEF'.
            lr: learning rate (one of `lrs`).
            batch_size: batch size (one of `batch_sizes`).
            epoch: 12 (the 12-epoch runs) or 200 (the mean 200-epoch test accuracy).
            mode: 'train', 'valid' or 'test' accuracy (and cost up to that split).
            iepoch: epoch 1..12 of the 12-epoch run to read (default 12).
            seed: set (stickily) the seed before querying.
            enable_log: add the query to the log lists and charge its cost.

        Returns:
            (accuracy %, cost s) for epoch 12; (accuracy %, None) for epoch 200.
        """
        row, li, bi = self._check_key(cellcode, lr, batch_size, epoch)
        assert mode in ["train", "valid", "test"], ValueError(
            f"mode {mode} should be train, valid, or test")
        if epoch != 12:
            assert iepoch is None, ValueError(f"iepoch is not available in epoch {epoch}")
        if iepoch is None:
            iepoch = epoch
        assert iepoch <= epoch, ValueError(f"iepoch {iepoch} is graeter than epoch {epoch}")
        if seed:
            self.set_seed(seed)
        if epoch == 12:
            if not (type(iepoch) is int or isinstance(iepoch, np.integer | int)) or not (
                    1 <= iepoch <= OFFICIAL_EPOCHS):
                raise KeyError(f"{mode}_acc_{iepoch - 1}")  # the client's missing column
            if row < 0:
                raise self._missing(cellcode)
            si = self._seed_ix.get(self.seed)
            if si is None:
                raise KeyError((self._cellcode2hash(cellcode), lr, batch_size, self.seed))
            if not self._held[row, li, bi, si]:
                raise self._missing(cellcode, f"the run (lr {lr}, batch size {batch_size}, "
                                              f"seed {self.seed})")
            mi, n = _MODE_IX[mode], int(iepoch)
            acc = float(self._acc[row, li, bi, si, mi, n - 1])
            if n == OFFICIAL_EPOCHS:
                cost = float(self._full[row, li, bi, si, mi])
            else:  # train times, then valid, then test, summed as the client sums them
                cost = sum(self._time[row, li, bi, si, :mi + 1, :n].ravel().tolist())
            key = {"cellcode": cellcode, "lr": lr, "batch_size": batch_size}
            if enable_log:
                self._write_log(acc, cost, key)
            return acc, cost
        elif epoch == 200:
            if row < 0:
                raise self._missing(cellcode)
            value = np.nan if self._avg is None else self._avg[row, li, bi]
            if not np.isfinite(value):
                raise self._missing(cellcode, "the 200-epoch accuracy (extra['avg_acc_200'])")
            return float(value), None

    def _write_log(self, acc: float, cost: float, key: dict) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            if len(self.acc_trans) == 0:
                self.logger.debug(_HEADER)
            self.logger.debug(f'{acc:>8.2f} %   {cost:>8.2f} sec  {key["cellcode"]} '
                              f'{key["lr"]:<7.5f} {key["batch_size"]:<3}')
        self.acc_trans.append(acc)
        self.key_trans.append(key)
        self.total_cost += cost
        self.total_cost_trans.append(self.total_cost)
        if self.best_key is None or self.best_acc < acc:
            self.best_acc, self.best_cost, self.best_key = acc, cost, key
        self.best_acc_trans.append(self.best_acc)
        self.best_key_trans.append(self.best_key)

    def get_total_cost(self) -> float:
        """The summed cost of the logged queries (seconds)."""
        return self.total_cost

    def get_results(self, epoch: int | str = "both", mode: str = "test") -> dict[str, list]:
        """Logs the summary and returns the log lists plus the best key's final accuracies.

        Args:
            epoch: 12, 200 or 'both' (the epochs of `final_accs`).
            mode: the 12-epoch accuracy to report.

        Returns:
            {'acc_trans', 'key_trans', 'best_acc_trans', 'best_key_trans',
            'total_cost_trans', 'final_accs'} (the lists themselves, as the client).
        """
        info = self.logger.info
        info("-" * 23 + " finished " + "-" * 23)
        info("The best setting is")
        info(_HEADER)
        info(f"{self.best_acc:>8.2f} %   {self.best_cost:>8.2f} sec  "
             f'{self.best_key["cellcode"]} {self.best_key["lr"]:<7.5f} '
             f'{self.best_key["batch_size"]:<3}')
        info(f" in {len(self.key_trans)} trials ({self.total_cost:.2f} sec)")
        epochs = [12, 200] if epoch == "both" else [epoch]
        info("-" * 56)
        self.final_accs = []
        for e in epochs:
            final_acc, _ = self.query_by_key(**self.best_key, epoch=e, mode=mode,
                                             enable_log=False)
            self.final_accs.append(final_acc)
            info(f"{e}-epoch {mode} accuracy is {final_acc:.2f}%")
        info("-" * 56)
        names = ("acc_trans", "key_trans", "best_acc_trans", "best_key_trans",
                 "total_cost_trans", "final_accs")
        return {n: getattr(self, n) for n in names}

    def reset_logdata(self, logger: Logger | None = None, verbose: bool | None = None) -> None:
        """Clears the log (and the charged cost); optionally swaps the logger / verbosity."""
        if logger is not None:
            self.logger = logger
        if verbose is not None:
            self.verbose = verbose
        self._init_logdata()
