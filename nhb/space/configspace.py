"""NAS-HPO-Bench-II's joint space as a ConfigSpace `ConfigurationSpace` (optional extra).

For libraries that speak ConfigSpace (SMAC3, DEHB, HpBandSter, Syne Tune's converters): six
categorical edges (`edge_A` .. `edge_F` in the official edge order, choices the op names of
`nhb.space.cells.OP_NAMES`), the learning rate and the batch size as ordinal hyperparameters
over the benchmark's values (so model-based optimisers see their order). `to_config` /
`from_config` convert between a ConfigSpace configuration and nhb's `Config`; a sub-space
(`nhb.bench.SearchSpace`) restricts the lr / batch-size choices to those it holds. Needs the
`ConfigSpace` package (`pip install ConfigSpace`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nhb.space import cells as _cells
from nhb.space import nhb2

EDGE_NAMES = tuple(f"edge_{c}" for c in "ABCDEF")[:_cells.NUM_EDGES]
LR, BATCH_SIZE = "lr", "batch_size"  # the hyperparameters' names in exported spaces


def _cs() -> Any:
    try:
        import ConfigSpace
    except ImportError as e:
        raise ImportError("the ConfigSpace export needs ConfigSpace: pip install ConfigSpace") \
            from e
    return ConfigSpace


def nhb2_configspace(lrs: tuple[float, ...] = nhb2.LRS,
                     batch_sizes: tuple[int, ...] = nhb2.BATCH_SIZES,
                     seed: int | None = None) -> Any:
    """The joint space as a `ConfigurationSpace`.

    Args:
        lrs: the learning rates offered (default all 8).
        batch_sizes: the batch sizes offered (default all 6).
        seed: the space's sampling seed.

    Returns:
        The ConfigurationSpace (edges categorical, lr and batch size ordinal).

    Raises:
        ValueError: an lr or batch size that is not one of the benchmark's.
    """
    cs = _cs()
    for v in lrs:
        nhb2.value_index(v, nhb2.LRS, LR)
    for v in batch_sizes:
        nhb2.value_index(v, nhb2.BATCH_SIZES, BATCH_SIZE)
    space = cs.ConfigurationSpace(seed=seed)
    space.add([cs.CategoricalHyperparameter(e, list(_cells.OP_NAMES)) for e in EDGE_NAMES])
    space.add([cs.OrdinalHyperparameter(LR, sorted(float(v) for v in lrs)),
               cs.OrdinalHyperparameter(BATCH_SIZE, sorted(int(v) for v in batch_sizes))])
    return space


def from_config(config: Any) -> nhb2.Config:
    """nhb's `Config` of a ConfigSpace configuration (or a plain dict of its values)."""
    d = dict(config)
    ops = [_cells.OP_NAMES.index(d[e]) for e in EDGE_NAMES]
    return nhb2.make(np.asarray(ops, np.int8),
                     nhb2.value_index(float(d[LR]), nhb2.LRS, LR),
                     nhb2.value_index(int(d[BATCH_SIZE]), nhb2.BATCH_SIZES, BATCH_SIZE))


def to_config(space: Any, cfg: nhb2.Config) -> Any:
    """The ConfigSpace configuration of one nhb `Config` in `space`."""
    cs = _cs()
    cell = np.asarray(cfg.cell).tolist()
    values = {e: _cells.OP_NAMES[int(o)] for e, o in zip(EDGE_NAMES, cell, strict=True)}
    values.update(lr=float(nhb2.LRS[int(cfg.lr)]),
                  batch_size=int(nhb2.BATCH_SIZES[int(cfg.bs)]))
    return cs.Configuration(space, values=values)
