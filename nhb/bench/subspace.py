"""The search space a table covers: a sub-grid of cells x learning rates x batch sizes.

A table stores some of the 1011 cell classes (every one of the 4096 cells whose class has a
row is covered, `Table.row_of_cell >= 0`), a subset of the 8 learning rates and a subset of
the 6 batch sizes, trained for some number of epochs. `SearchSpace` describes that product set
(and the epochs a query may stop at, 1..n_epochs) with the benchmark's full-grid
indices (`nhb2.Config.lr` / `.bs` stay indices into `nhb2.LRS` / `nhb2.BATCH_SIZES`). It is a
static, hashable value (it travels in `Benchmark`'s static pytree data and on strategies), so
`is_full` and the sizes are Python values that select code paths at trace time; its arrays
enter traced code as constants (a few KiB).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nhb.space import cells as _cells
from nhb.space import nhb2


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Covered cells x allowed lr indices x allowed batch-size indices (static, hashable).

    Attributes:
        cell_mask: 4096 bytes, 1 where the cell is covered (its class has a table row).
        lrs: allowed indices into `nhb2.LRS`, increasing.
        bss: allowed indices into `nhb2.BATCH_SIZES`, increasing.
        n_epochs: epochs of the table's runs (12 for the benchmark protocol): a full query
            stops there, and budgets in epochs are at most this.
    """

    cell_mask: bytes
    lrs: tuple[int, ...]
    bss: tuple[int, ...]
    n_epochs: int = 12

    def __post_init__(self):
        mask = np.frombuffer(self.cell_mask, np.uint8)
        if mask.size != nhb2.NUM_CELLS or mask.max(initial=0) > 1:
            raise ValueError(f"cell_mask must be {nhb2.NUM_CELLS} bytes of 0/1")
        for name, values, n in (("lrs", self.lrs, nhb2.NUM_LRS),
                                ("bss", self.bss, nhb2.NUM_BS)):
            v = tuple(int(x) for x in values)
            if not v or list(v) != sorted(set(v)) or v[0] < 0 or v[-1] >= n:
                raise ValueError(f"{name} must be increasing distinct indices in 0..{n - 1}; "
                                 f"got {values}")
            object.__setattr__(self, name, v)
        if not mask.any():
            raise ValueError("the space covers no cell")
        if int(self.n_epochs) < 1:
            raise ValueError(f"n_epochs must be >= 1, got {self.n_epochs}")
        object.__setattr__(self, "n_epochs", int(self.n_epochs))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def full(cls) -> SearchSpace:
        """All 4096 cells x 8 learning rates x 6 batch sizes."""
        return _full()

    @classmethod
    def make(cls, cells: Sequence[int] | np.ndarray, lrs: Sequence[int] = tuple(
            range(nhb2.NUM_LRS)), bss: Sequence[int] = tuple(range(nhb2.NUM_BS)),
             n_epochs: int = 12) -> SearchSpace:
        """A space from covered cell indices (or a bool [4096] mask) and lr / bs indices.

        Args:
            cells: covered cell indices 0..4095, or a bool mask of length 4096.
            lrs: allowed indices into `nhb2.LRS`.
            bss: allowed indices into `nhb2.BATCH_SIZES`.
            n_epochs: epochs of the runs.

        Returns:
            The space.
        """
        c = np.asarray(cells)
        if c.dtype == bool:
            mask = c.reshape(-1)
        else:
            mask = np.zeros(nhb2.NUM_CELLS, bool)
            mask[c.astype(np.int64).reshape(-1)] = True
        return cls(mask.astype(np.uint8).tobytes(), tuple(sorted(int(x) for x in lrs)),
                   tuple(sorted(int(x) for x in bss)), int(n_epochs))

    @classmethod
    def from_table(cls, table) -> SearchSpace:
        """The space of a `Table`: cells with `row_of_cell >= 0`, its lrs, batch sizes, epochs.

        Args:
            table: an `nhb.bench.Table`.

        Returns:
            The space.

        Raises:
            ValueError: a table lr / batch size is not a benchmark value, or is repeated.
        """
        lrs = [grid_index(v, nhb2.LRS, "learning rate") for v in table.lrs]
        bss = [grid_index(v, nhb2.BATCH_SIZES, "batch size") for v in table.batch_sizes]
        for name, idx in (("learning rates", lrs), ("batch sizes", bss)):
            if len(set(idx)) != len(idx):
                raise ValueError(f"table {name} repeat a value: {idx}")
        return cls.make(np.asarray(table.row_of_cell) >= 0, lrs, bss, table.n_epochs)

    # ------------------------------------------------------------------ sizes

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """bool [4096] covered cells."""
        out = np.frombuffer(self.cell_mask, np.uint8).astype(bool)
        out.setflags(write=False)
        return out

    @functools.cached_property
    def cells(self) -> np.ndarray:
        """int32 [n_cells] covered cell indices, increasing."""
        return np.flatnonzero(self.mask).astype(np.int32)

    @property
    def n_cells(self) -> int:
        """Number of covered cells (of 4096)."""
        return len(self.cells)

    @property
    def all_cells(self) -> bool:
        """Whether all 4096 cells are covered."""
        return self.n_cells == nhb2.NUM_CELLS

    @property
    def full_hps(self) -> bool:
        """Whether all 8 x 6 (lr, bs) pairs are allowed."""
        return len(self.lrs) == nhb2.NUM_LRS and len(self.bss) == nhb2.NUM_BS

    @property
    def is_full(self) -> bool:
        """Whether the configs are the whole 4096 x 8 x 6 space (any epochs)."""
        return self.all_cells and self.full_hps

    @property
    def n_classes(self) -> int:
        """Number of covered cell classes (of 1011)."""
        return int(np.unique(_cells.cell_tables().class_id[self.cells]).size)

    @property
    def n_configs(self) -> int:
        """Configs a strategy can sample: covered cells x lrs x batch sizes."""
        return self.n_cells * len(self.lrs) * len(self.bss)

    @property
    def n_distinct(self) -> int:
        """Distinct table entries: covered classes x lrs x batch sizes."""
        return self.n_classes * len(self.lrs) * len(self.bss)

    @functools.cached_property
    def lr_slot(self) -> np.ndarray:
        """int32 [8]: position of each full-grid lr index in `lrs` (-1 if not allowed)."""
        return _slots(self.lrs, nhb2.NUM_LRS)

    @functools.cached_property
    def bs_slot(self) -> np.ndarray:
        """int32 [6]: position of each full-grid batch-size index in `bss` (-1 if not allowed)."""
        return _slots(self.bss, nhb2.NUM_BS)

    def contains(self, cfg: nhb2.Config) -> jax.Array:
        """Whether configs lie in the space (jittable; any batch shape)."""
        idx = nhb2.cell_index(cfg.cell)
        return (jnp.asarray(self.mask)[idx] & (jnp.asarray(self.lr_slot)[cfg.lr] >= 0)
                & (jnp.asarray(self.bs_slot)[cfg.bs] >= 0))

    def describe(self) -> str:
        """One line: sizes, the allowed values and the epochs."""
        if self.is_full:
            text = f"full space: 4096 cells x 8 lrs x 6 batch sizes = {self.n_configs} configs"
        else:
            text = (f"{self.n_cells} cells ({self.n_classes} classes) x lrs "
                    f"{[nhb2.LRS[i] for i in self.lrs]} x batch sizes "
                    f"{[nhb2.BATCH_SIZES[i] for i in self.bss]} = {self.n_configs} configs "
                    f"({self.n_distinct} distinct)")
        return text + ("" if self.n_epochs == 12 else f", {self.n_epochs} epochs")

    def __repr__(self) -> str:
        return f"SearchSpace({self.describe()})"


@functools.cache
def _full() -> SearchSpace:
    return SearchSpace(b"\x01" * nhb2.NUM_CELLS, tuple(range(nhb2.NUM_LRS)),
                       tuple(range(nhb2.NUM_BS)))


def _slots(values: tuple[int, ...], n: int) -> np.ndarray:
    out = np.full(n, -1, np.int32)
    out[list(values)] = np.arange(len(values), dtype=np.int32)
    out.setflags(write=False)
    return out


def grid_index(value: float, choices: Sequence[float], what: str) -> int:
    """Index of a value in a benchmark grid (relative tolerance 1e-6); ValueError naming the
    valid choices otherwise."""
    for i, c in enumerate(choices):
        if np.isclose(float(value), c, rtol=1e-6, atol=0):
            return i
    raise ValueError(f"table {what} {value!r} is not a NAS-HPO-Bench-II value; valid choices: "
                     f"{list(choices)}")
