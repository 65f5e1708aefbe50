"""NAS-HPO-Bench-II as a Syne Tune blackbox: `(config, fidelity, seed) -> metrics` over a table.

`NHB2Blackbox(bench)` subclasses `syne_tune.blackbox_repository.blackbox.Blackbox`, so Syne
Tune's simulator (`UserBlackboxBackend` + `SimulatorCallback`) runs its schedulers on any nhb
table (`nhb.bench.Benchmark`, full or sub-grid). The mapping:

- configuration space: the six edges `edge_A` .. `edge_F` (`nhb.space.configspace.EDGE_NAMES`)
  as `choice` over the op names (`nhb.space.cells.OP_NAMES`), `lr` and `batch_size` as
  `choice` over the values the table holds (`bench.space`); `encode` / `decode` convert such
  dicts to and from nhb's `nhb2.Config`;
- fidelity: `epoch`, 1..n_epochs (12 for the benchmark): the values after that epoch of the
  12-epoch run (`Benchmark.query(epoch=...)`); without a fidelity, every epoch (an array
  [n_epochs, n_objectives], as Syne Tune's tabular blackboxes answer);
- seed: a seed index 0..num_seeds-1 (Syne Tune's convention, also `Benchmark.query`'s int
  seed), "official" (the smallest seed, as the official client) or "mean" (mean over seeds);
  None takes the blackbox's `seed` (default "official"), so every query of a trial reads the
  same run (the simulator passes None unless its backend was given a seed);
- metrics (`objectives_names`): `valid_error` (100 - validation accuracy, to minimise) and
  every field of `nhb.bench.api.QueryResult`: `valid_acc`, `test_acc` (%), `valid_loss`,
  `test_loss`, `cost` (simulated seconds of training and validation, plus the test passes
  for mode "test", from the start up to that epoch: cumulative, as the official client
  charges a query stopping there; pass `elapsed_time_attr=ELAPSED_TIME_ATTR` to the
  simulator, which itself subtracts the time up to the epoch a paused trial resumes from),
  `params` and `flops` (of the cell's network).

A config the table does not hold (an lr or batch size outside `bench.space`, a cell whose
class has no row) raises a ValueError naming the valid choices. `objective_function_batch`
answers many configs (dicts or an `nhb2.Config` batch) in one jitted `Benchmark.query` and
returns device arrays, as the raw API (`benchmarks/synetune_speed.py` compares the two); Syne
Tune's own path, `blackbox(config, fidelity, seed)`, is the same query on one config, with
Python floats (ints for params and flops) back. Needs Syne Tune: `pip install "nhb[synetune]"`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nhb.bench.api import MODES, Benchmark, QueryResult
from nhb.bench.table import Table
from nhb.space import cells as _cells
from nhb.space import nhb2
from nhb.space.configspace import BATCH_SIZE, EDGE_NAMES, LR

try:
    from syne_tune.blackbox_repository.blackbox import Blackbox
    from syne_tune.config_space import choice, randint
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError('nhb.bench.synetune needs Syne Tune: pip install "nhb[synetune]" '
                      '(syne-tune and huggingface_hub)') from e

FIDELITY = "epoch"
VALID_ERROR = "valid_error"
ELAPSED_TIME_ATTR = "cost"  # QueryResult.cost: cumulative simulated seconds up to the epoch
_FIELDS = tuple(f.name for f in dataclasses.fields(QueryResult))
METRICS = (VALID_ERROR, *_FIELDS)
_OP_IX = {name: i for i, name in enumerate(_cells.OP_NAMES)}
_get_ops = operator.itemgetter(*EDGE_NAMES)


@functools.cache
def _cell_index() -> dict[tuple[str, ...], int]:
    """Cell index (0..4095) of each tuple of six op names."""
    return {tuple(_cells.OP_NAMES[o] for o in ops): i
            for i, ops in enumerate(_cells.cell_tables().digits.tolist())}


@functools.partial(jax.jit, static_argnames=("seed", "mode", "curve"))
def _query(bench: Benchmark, cfgs: nhb2.Config, epoch: jax.Array, seed: str | int, mode: str,
           curve: bool) -> tuple[dict[str, jax.Array], jax.Array]:
    """({metric: values}, whether any config is out of range or NaN (off the table)) at
    `epoch` (curve: configs [...] x epochs [E] -> [..., E])."""
    if curve:
        cfgs = nhb2.Config(cell=cfgs.cell[..., None, :], lr=cfgs.lr[..., None],
                           bs=cfgs.bs[..., None])
    shape = jnp.broadcast_shapes(jnp.shape(cfgs.lr), jnp.shape(epoch))
    cfgs = nhb2.Config(cell=jnp.broadcast_to(cfgs.cell, (*shape, _cells.NUM_EDGES)),
                       lr=jnp.broadcast_to(cfgs.lr, shape), bs=jnp.broadcast_to(cfgs.bs, shape))
    r = bench.query(cfgs, epoch=epoch, seed=seed, mode=mode)
    out = {VALID_ERROR: 100.0 - r.valid_acc, **{f: getattr(r, f) for f in _FIELDS}}
    u = lambda x: x.astype(jnp.uint32)  # negative indices wrap to large ones
    bad = (jnp.isnan(r.valid_acc) | (jnp.max(u(cfgs.cell), -1) >= _cells.NUM_OPS)
           | (u(cfgs.lr) >= nhb2.NUM_LRS) | (u(cfgs.bs) >= nhb2.NUM_BS))
    return out, bad.any()


class NHB2Blackbox(Blackbox):
    """An nhb table as a Syne Tune blackbox (see the module docstring).

    Attributes:
        bench: the benchmark answering the queries.
        seed: the seed of queries without one ("official", "mean" or a seed index).
        mode: "valid" or "test": whether `cost` includes the test passes.
        num_seeds: seeds the table holds.
    """

    def __init__(self, bench: Benchmark | Table | str | os.PathLike,
                 seed: str | int = "official", mode: str = "valid"):
        """Builds the spaces of the table's values.

        Args:
            bench: a `Benchmark`, or a table / table path to build one from.
            seed: default seed mode (see the module docstring).
            mode: cost mode of `Benchmark.query`.
        """
        self.bench = bench if isinstance(bench, Benchmark) else Benchmark(bench)
        sp = self.bench.space
        self._lrs = {nhb2.LRS[i]: i for i in sp.lrs}
        self._bss = {nhb2.BATCH_SIZES[i]: i for i in sp.bss}
        space = {e: choice(list(_cells.OP_NAMES)) for e in EDGE_NAMES}
        space[LR] = choice(list(self._lrs))
        space[BATCH_SIZE] = choice(list(self._bss))
        super().__init__(configuration_space=space,
                         fidelity_space={FIDELITY: randint(1, self.bench.n_epochs)},
                         objectives_names=list(METRICS))
        self.num_seeds = len(self.bench.seeds)
        self.seed: str | int = "official"
        self.seed = self._seed(seed)
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is invalid; valid choices: {list(MODES)}")
        self.mode = mode

    @property
    def fidelity_values(self) -> np.ndarray:
        """The epochs 1..n_epochs."""
        return np.arange(1, self.bench.n_epochs + 1)

    # ------------------------------------------------------------------ configurations

    def encode(self, configurations: Mapping[str, Any] | Sequence[Mapping[str, Any]]
               ) -> nhb2.Config:
        """nhb configs of config dicts (keys outside the space are ignored).

        Args:
            configurations: one dict (batch shape ()) or a sequence of them (shape [N]).

        Returns:
            The `nhb2.Config` (full-grid lr / batch-size indices; NumPy leaves of
            `nhb2.make`'s dtypes).

        Raises:
            ValueError: a missing key or a value outside the space, naming the valid choices.
        """
        one = isinstance(configurations, Mapping)
        cs = [configurations] if one else configurations
        n, lrs, bss, cell_ix = len(cs), self._lrs, self._bss, _cell_index()
        try:  # exact values: one dict lookup per element
            cell = np.fromiter((cell_ix[_get_ops(c)] for c in cs), np.int32, n)
            lr = np.fromiter((lrs[c[LR]] for c in cs), np.int32, n)
            bs = np.fromiter((bss[c[BATCH_SIZE]] for c in cs), np.int32, n)
        except (KeyError, TypeError):  # lrs within float tolerance, or the error
            cell, lr, bs = np.asarray([self._encode_one(c) for c in cs], np.int32).T
        cfg = nhb2.Config(cell=_cells.cell_tables().digits[cell], lr=lr, bs=bs)
        return jax.tree.map(lambda x: x[0], cfg) if one else cfg

    def _encode_one(self, c: Mapping[str, Any]) -> list[int]:
        """[cell index, lr index, batch-size index] of one dict, or the error naming choices."""
        for k in (*EDGE_NAMES, LR, BATCH_SIZE):
            if k not in c:
                raise ValueError(f"config {dict(c)} lacks {k!r}; the space's keys: "
                                 f"{list(self.configuration_space)}")
            if k in EDGE_NAMES and not (isinstance(c[k], str) and c[k] in _OP_IX):
                raise ValueError(f"{k} {c[k]!r} is invalid; valid choices: "
                                 f"{list(_cells.OP_NAMES)}")
        lr = nhb2.value_index(c[LR], list(self._lrs), "learning rate")
        bs = nhb2.value_index(c[BATCH_SIZE], list(self._bss), "batch size")
        return [_cell_index()[_get_ops(c)], self.bench.space.lrs[lr], self.bench.space.bss[bs]]

    def decode(self, cfgs: nhb2.Config) -> dict[str, Any] | list[dict[str, Any]]:
        """Config dicts of an `nhb2.Config` (one dict for batch shape (), else a list)."""
        cell, lr, bs = (np.asarray(x) for x in (cfgs.cell, cfgs.lr, cfgs.bs))
        out = [{**{e: _cells.OP_NAMES[o] for e, o in zip(EDGE_NAMES, ops.tolist(), strict=True)},
                LR: nhb2.LRS[i], BATCH_SIZE: nhb2.BATCH_SIZES[j]}
               for ops, i, j in zip(cell.reshape(-1, _cells.NUM_EDGES), lr.reshape(-1).tolist(),
                                    bs.reshape(-1).tolist(), strict=True)]
        return out[0] if lr.ndim == 0 else out

    # ------------------------------------------------------------------ queries

    def objective_function_batch(self, configurations: nhb2.Config | Sequence[Mapping],
                                 fidelity: int | np.ndarray | None = None,
                                 seed: str | int | None = None) -> dict[str, jax.Array]:
        """Metrics of many configs in one jitted `Benchmark.query`.

        Args:
            configurations: config dicts, or an `nhb2.Config` batch.
            fidelity: epoch(s) 1..n_epochs, an int or an array broadcastable to the batch;
                None: every epoch (a trailing axis of n_epochs).
            seed: seed index, "official" or "mean" (None: `self.seed`).

        Returns:
            {metric: device array of the batch shape (+ [n_epochs] if fidelity is None)}.

        Raises:
            ValueError: an invalid config or one off the table (`Benchmark.query`'s error).
        """
        cfgs = configurations
        if not isinstance(cfgs, nhb2.Config):
            cfgs = self.encode(cfgs)
        epoch = self._epoch(self.fidelity_values if fidelity is None else fidelity)
        seed = self._seed(seed)
        out, bad = _query(self.bench, cfgs, epoch, seed, self.mode, fidelity is None)
        if bad:  # the query API's error on concrete configs (none for a run stored as NaN)
            self.bench.query(cfgs, epoch=int(np.max(epoch)), seed=seed, mode=self.mode)
        return out

    def _objective_function(self, configuration: Mapping[str, Any],
                            fidelity: Mapping[str, Any] | None = None,
                            seed: str | int | None = None) -> dict[str, float] | np.ndarray:
        """Syne Tune's query: a dict of metrics, or [n_epochs, n_metrics] without fidelity."""
        epoch = None if fidelity is None else fidelity[FIDELITY]
        out = jax.device_get(self.objective_function_batch([configuration], epoch, seed))
        if fidelity is None:
            return np.stack([out[m][0].astype(np.float64) for m in METRICS], axis=-1)
        return {m: out[m][0].item() for m in METRICS}

    # ------------------------------------------------------------------ checks

    def _epoch(self, fidelity: Any) -> np.ndarray:
        n = self.bench.n_epochs
        if type(fidelity) is int and 1 <= fidelity <= n:  # the common case, quickly
            return np.int32(fidelity)
        e = np.asarray(fidelity)
        if not (np.issubdtype(e.dtype, np.number) and np.all(e == np.round(e))
                and e.min(initial=1) >= 1 and e.max(initial=1) <= n):
            raise ValueError(f"{FIDELITY} {fidelity!r} is invalid; valid choices: 1..{n}")
        return e.astype(np.int32)

    def _seed(self, seed: Any) -> str | int:
        if seed is None:
            return self.seed
        if isinstance(seed, str) and seed in ("official", "mean"):
            return seed
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool) and (
                0 <= seed < self.num_seeds):
            return int(seed)
        raise ValueError(f"seed {seed!r} is invalid; valid choices: 'official', 'mean', None "
                         f"or a seed index 0..{self.num_seeds - 1} (seeds {self.bench.seeds})")
