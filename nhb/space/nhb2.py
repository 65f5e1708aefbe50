"""The NAS-HPO-Bench-II joint space (cell x learning rate x batch size) as a pytree.

A configuration is a `Config` (a `flax.struct.dataclass`) of integer arrays: `cell` int8[..., 6]
(op digit per edge, code order "A|BC|DEF"), `lr` and `bs` int32[...] (indices into `LRS` and
`BATCH_SIZES`). Leading axes are batch axes, so every method below is jittable and works on a
single config or a batch alike; search loops can carry configs through `lax.scan`.

The flat index is `cell * 48 + lr * 6 + bs` where `cell` is the base-4 number of the six digits
(digit A most significant), which equals the position of the code in the sorted list of the
4096 official codes; this is the upstream API's order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

from nhb.space import cells as _cells

LRS = (0.003125, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
BATCH_SIZES = (16, 32, 64, 128, 256, 512)
SEEDS = (222, 555, 888)
NUM_LRS = len(LRS)
NUM_BS = len(BATCH_SIZES)
NUM_HPS = NUM_LRS * NUM_BS
NUM_CELLS = _cells.NUM_CELLS
NUM_CONFIGS = NUM_CELLS * NUM_HPS
NUM_CLASSES = 1011
ONEHOT_DIM = _cells.NUM_EDGES * _cells.NUM_OPS + NUM_LRS + NUM_BS
MAX_NODES = _cells.MAX_VERTICES
MAX_GRAPH_EDGES = 10
_POW4 = np.array([4**(5 - k) for k in range(6)], dtype=np.int32)
_OPS_HELP = "valid ops: " + ", ".join(f"{i} {n}" for i, n in enumerate(_cells.OP_NAMES))


@struct.dataclass
class Config:
    """A joint NAS-HPO-Bench-II configuration (or a batch of them on leading axes).

    Attributes:
        cell: int8 [..., 6] op digit per edge (0 conv3x3, 1 avgpool3x3, 2 skip, 3 zero).
        lr: int32 [...] index into `LRS`.
        bs: int32 [...] index into `BATCH_SIZES`.
    """

    cell: jax.Array
    lr: jax.Array
    bs: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape."""
        return tuple(self.lr.shape)


def make(cell, lr, bs) -> Config:
    """Builds a `Config` from array-likes of indices, casting to the canonical dtypes."""
    return Config(cell=jnp.asarray(cell, jnp.int8), lr=jnp.asarray(lr, jnp.int32),
                  bs=jnp.asarray(bs, jnp.int32))


# ----------------------------------------------------------------------------- indices


def cell_index(cell: jax.Array) -> jax.Array:
    """Base-4 index (0..4095) of op digits [..., 6]."""
    return jnp.sum(jnp.asarray(cell, jnp.int32) * _POW4, axis=-1)


def cell_from_index(index: jax.Array) -> jax.Array:
    """Op digits int8 [..., 6] of cell indices."""
    index = jnp.asarray(index, jnp.int32)
    return ((index[..., None] // _POW4) % 4).astype(jnp.int8)


def to_index(cfg: Config) -> jax.Array:
    """Flat index `cell*48 + lr*6 + bs` (int32, 0..196607)."""
    return cell_index(cfg.cell) * NUM_HPS + cfg.lr * NUM_BS + cfg.bs


def from_index(index: jax.Array) -> Config:
    """Inverse of `to_index`."""
    index = jnp.asarray(index, jnp.int32)
    return Config(cell=cell_from_index(index // NUM_HPS),
                  lr=(index // NUM_BS) % NUM_LRS, bs=index % NUM_BS)


def to_onehot(cfg: Config) -> jax.Array:
    """One-hot encoding float32 [..., 38]: 6 edges x 4 ops, then 8 lrs, then 6 batch sizes."""
    cell = jax.nn.one_hot(cfg.cell, _cells.NUM_OPS).reshape(*cfg.shape, -1)
    return jnp.concatenate(
        [cell, jax.nn.one_hot(cfg.lr, NUM_LRS), jax.nn.one_hot(cfg.bs, NUM_BS)], axis=-1)


def from_onehot(x: jax.Array) -> Config:
    """Inverse of `to_onehot` (argmax per block)."""
    n = _cells.NUM_EDGES * _cells.NUM_OPS
    cell = jnp.argmax(x[..., :n].reshape(*x.shape[:-1], _cells.NUM_EDGES, _cells.NUM_OPS), -1)
    return make(cell, jnp.argmax(x[..., n:n + NUM_LRS], -1), jnp.argmax(x[..., n + NUM_LRS:], -1))


def hparams(cfg: Config) -> tuple[jax.Array, jax.Array]:
    """The learning rate (float32) and batch size (int32) values of a config."""
    return jnp.asarray(LRS, jnp.float32)[cfg.lr], jnp.asarray(BATCH_SIZES, jnp.int32)[cfg.bs]


# ----------------------------------------------------------------------------- sampling


def sample(key: jax.Array, n: int | None = None) -> Config:
    """Uniform samples over 4096 x 8 x 6 (one config if `n` is None, else a batch of n)."""
    shape = () if n is None else (n,)
    return from_index(jax.random.randint(key, shape, 0, NUM_CONFIGS))


def mutate(key: jax.Array, cfg: Config) -> Config:
    """Changes one of the 8 elements (6 edges, lr, bs), chosen uniformly, to a different value.

    The new value is uniform over the other choices of that element (the regularized
    evolution mutation of the reference scripts). Works on any batch shape; each member is
    mutated independently.

    Args:
        key: PRNG key.
        cfg: config(s) to mutate.

    Returns:
        The mutated config(s).
    """
    k_pos, k_val = jax.random.split(key)
    shape = cfg.shape
    pos = jax.random.randint(k_pos, shape, 0, _cells.NUM_EDGES + 2)
    u = jax.random.uniform(k_val, shape)
    cardinality = jnp.where(pos < 6, _cells.NUM_OPS, jnp.where(pos == 6, NUM_LRS, NUM_BS))
    shift = 1 + jnp.floor(u * (cardinality - 1)).astype(jnp.int32)
    edge_hot = jax.nn.one_hot(pos, _cells.NUM_EDGES, dtype=jnp.int32)
    cell = (cfg.cell.astype(jnp.int32) + edge_hot * shift[..., None]) % _cells.NUM_OPS
    lr = jnp.where(pos == 6, (cfg.lr + shift) % NUM_LRS, cfg.lr)
    bs = jnp.where(pos == 7, (cfg.bs + shift) % NUM_BS, cfg.bs)
    return make(cell, lr, bs)


# ----------------------------------------------------------------------------- classes


@functools.cache
def _device_tables() -> dict[str, np.ndarray]:
    t = _cells.cell_tables()
    senders = np.zeros((NUM_CELLS, MAX_GRAPH_EDGES), np.int32)
    receivers = np.zeros((NUM_CELLS, MAX_GRAPH_EDGES), np.int32)
    counts = np.zeros((NUM_CELLS, MAX_GRAPH_EDGES), np.float32)
    for i in range(NUM_CELLS):
        s, r = np.nonzero(t.adjacency[i])
        if len(s) > MAX_GRAPH_EDGES:
            raise AssertionError(f"cell {t.codes[i]} has {len(s)} > {MAX_GRAPH_EDGES} edges")
        senders[i, :len(s)], receivers[i, :len(s)] = s, r
        counts[i, :len(s)] = t.adjacency[i, s, r]
    node_ops = np.zeros((NUM_CELLS, MAX_NODES, len(_cells.VERTEX_LABELS)), np.float32)
    valid = t.node_labels >= 0
    node_ops[valid] = np.eye(len(_cells.VERTEX_LABELS), dtype=np.float32)[t.node_labels[valid]]
    return dict(class_id=t.class_id, representative=t.representative, group=t.group,
                disconnected=t.disconnected, senders=senders, receivers=receivers,
                counts=counts, node_ops=node_ops, node_mask=valid.astype(np.float32))


def canonical(cfg: Config) -> jax.Array:
    """Equivalence-class id (0..1010, index into the official `unique_cellcodes`) of the cell."""
    return jnp.asarray(_device_tables()["class_id"])[cell_index(cfg.cell)]


def representative(cfg: Config) -> Config:
    """The config with its cell replaced by the official representative of its class."""
    t = _device_tables()
    rep = jnp.asarray(t["representative"])[canonical(cfg)]
    return cfg.replace(cell=cell_from_index(rep))


def group(cfg: Config) -> jax.Array:
    """Architecture group 1, 2 or 3 of the cell (paper §4.3; see `cells.architecture_group`)."""
    return jnp.asarray(_device_tables()["group"], jnp.int32)[cell_index(cfg.cell)]


def is_disconnected(cfg: Config) -> jax.Array:
    """Whether the cell has no input -> output path."""
    return jnp.asarray(_device_tables()["disconnected"])[cell_index(cfg.cell)]


def to_graph(cfg: Config) -> jraph.GraphsTuple:
    """The compressed cell graphs of a batch of configs as one padded `jraph.GraphsTuple`.

    Every config gives one graph with exactly `MAX_NODES` node slots and `MAX_GRAPH_EDGES`
    edge slots, so shapes are static and batches are concatenations. Node slot 0 is the cell
    input, slot 1 the output, then the surviving conv/pool vertices in code order; unused slots
    have `mask` 0 and an all-zero `op` row. Unused edge slots are self-loops on slot 0 with
    `count` 0. Edge `count` is the number of parallel paths (skip contraction multiplicity).
    Globals hold the one-hot learning rate and batch size.

    Args:
        cfg: config(s) with batch shape () or (B,).

    Returns:
        GraphsTuple with nodes {"op": [B*8, 4], "mask": [B*8]}, edges {"count": [B*10]},
        senders/receivers [B*10], globals {"lr": [B, 8], "bs": [B, 6]}, n_node, n_edge [B].
    """
    if cfg.lr.ndim == 0:
        cfg = jax.tree.map(lambda x: jnp.asarray(x)[None], cfg)
    if len(cfg.shape) != 1:
        raise ValueError(f"to_graph takes a config or a 1-D batch, got batch shape {cfg.shape}")
    t = _device_tables()
    idx = cell_index(cfg.cell)
    b = idx.shape[0]
    offset = (jnp.arange(b, dtype=jnp.int32) * MAX_NODES)[:, None]
    gather = lambda name: jnp.asarray(t[name])[idx]
    return jraph.GraphsTuple(
        nodes={"op": gather("node_ops").reshape(b * MAX_NODES, -1),
               "mask": gather("node_mask").reshape(b * MAX_NODES)},
        edges={"count": gather("counts").reshape(b * MAX_GRAPH_EDGES)},
        senders=(gather("senders") + offset).reshape(-1),
        receivers=(gather("receivers") + offset).reshape(-1),
        globals={"lr": jax.nn.one_hot(cfg.lr, NUM_LRS), "bs": jax.nn.one_hot(cfg.bs, NUM_BS)},
        n_node=jnp.full((b,), MAX_NODES, jnp.int32),
        n_edge=jnp.full((b,), MAX_GRAPH_EDGES, jnp.int32),
    )


# ----------------------------------------------------------------------------- strings


def cell_from_string(code: str) -> np.ndarray:
    """Op digits int8[6] of an official code `"A|BC|DEF"`; raises ValueError if malformed."""
    if not isinstance(code, str):
        raise ValueError(f"cell code must be a string like '0|12|233', got {code!r}")
    parts = code.split("|")
    if [len(p) for p in parts] != [1, 2, 3] or not all(ch.isdigit() for ch in "".join(parts)):
        raise ValueError(f"cell code {code!r} is not of the form 'A|BC|DEF' with digits 0-3 "
                         f"({_OPS_HELP})")
    digits = np.array([int(ch) for ch in "".join(parts)], np.int8)
    if digits.max() >= _cells.NUM_OPS:
        raise ValueError(f"cell code {code!r} has op digit {int(digits.max())}; {_OPS_HELP}")
    return digits


def to_string(cfg: Config) -> str | list:
    """The official code string(s) `"A|BC|DEF"` of the cell(s) (nested lists for batches)."""
    digits = np.asarray(cfg.cell)
    if digits.ndim == 1:
        return _cells.code_of(tuple(digits))
    return [to_string(Config(cell=d, lr=None, bs=None)) for d in digits]


def from_string(code: str, lr: float = LRS[0], batch_size: int = BATCH_SIZES[0]) -> Config:
    """A config from the official query key: cell code, learning rate and batch size values.

    Args:
        code: official cell code `"A|BC|DEF"`.
        lr: learning-rate value, one of `LRS`.
        batch_size: batch-size value, one of `BATCH_SIZES`.

    Returns:
        The config (scalar batch shape).
    """
    cell = cell_from_string(code)
    lr_idx = value_index(lr, LRS, "learning rate")
    bs_idx = value_index(batch_size, BATCH_SIZES, "batch size")
    return make(cell, lr_idx, bs_idx)


def to_key(cfg: Config) -> tuple[str, float, int]:
    """The official API's query key `(cellcode, lr, batch_size)` of one config."""
    return to_string(cfg), LRS[int(cfg.lr)], BATCH_SIZES[int(cfg.bs)]


def to_keys(cfg: Config) -> list[tuple[str, float, int]]:
    """Official query keys of a 1-D batch of configs (see `to_key`)."""
    codes = np.asarray(_cells.cell_tables().codes)[np.asarray(cell_index(cfg.cell))]
    lrs = np.asarray(LRS)[np.asarray(cfg.lr)]
    bss = np.asarray(BATCH_SIZES)[np.asarray(cfg.bs)]
    return [(str(c), float(lr), int(b)) for c, lr, b in zip(codes, lrs, bss, strict=True)]


def from_keys(keys: Sequence[tuple[str, float, int]]) -> Config:
    """A 1-D batch of configs from official query keys; the inverse of `to_keys`."""
    code_index = {c: i for i, c in enumerate(_cells.cell_tables().codes)}
    lr_index = {v: i for i, v in enumerate(LRS)}
    bs_index = {v: i for i, v in enumerate(BATCH_SIZES)}
    cells, lrs, bss = [], [], []
    for code, lr, bs in keys:
        if code not in code_index:
            cell_from_string(code)  # raises the descriptive error
        cells.append(code_index[code])
        lrs.append(lr_index[lr] if lr in lr_index else value_index(lr, LRS, "learning rate"))
        bss.append(bs_index[bs] if bs in bs_index else value_index(bs, BATCH_SIZES,
                                                                     "batch size"))
    return make(cell_from_index(np.asarray(cells, np.int32)), lrs, bss)


def value_index(value: float, choices: Sequence[float], what: str) -> int:
    """The index of `value` among `choices` (relative tolerance 1e-6); a ValueError names the
    valid choices."""
    for i, c in enumerate(choices):
        if np.isclose(float(value), c, rtol=1e-6, atol=0):
            return i
    raise ValueError(f"{what} {value!r} is not in the benchmark; valid choices: {list(choices)}")


# ----------------------------------------------------------------------------- validation


def validate(cfg: Config) -> Config:
    """Checks a concrete config; raises ValueError naming the valid choices.

    Args:
        cfg: a config or a batch of configs (not traced).

    Returns:
        `cfg` unchanged, for chaining.
    """
    cell, lr, bs = (np.asarray(x) for x in (cfg.cell, cfg.lr, cfg.bs))
    if cell.shape[-1:] != (_cells.NUM_EDGES,) or not cell.shape[:-1] == lr.shape == bs.shape:
        raise ValueError(f"config shapes disagree: cell {cell.shape}, lr {lr.shape}, "
                         f"bs {bs.shape}; expected cell [..., 6] and lr, bs [...]")
    bad = cell[(cell < 0) | (cell >= _cells.NUM_OPS)]
    if bad.size:
        raise ValueError(f"op index {int(bad.flat[0])} is invalid; {_OPS_HELP}")
    for arr, n, what, values in ((lr, NUM_LRS, "lr", LRS), (bs, NUM_BS, "bs", BATCH_SIZES)):
        bad = arr[(arr < 0) | (arr >= n)]
        if bad.size:
            raise ValueError(f"{what} index {int(bad.flat[0])} is invalid; valid indices "
                             f"0..{n - 1} for values {list(values)}")
    return cfg


class NHB2Space:
    """The NAS-HPO-Bench-II space as a static object (the interface every nhb space offers).

    Stateless: each method is the module-level function of the same name, so strategies can be
    written against a space object and stay jittable.
    """

    name = "nas-hpo-bench-ii"
    num_configs = NUM_CONFIGS
    onehot_dim = ONEHOT_DIM
    sample = staticmethod(sample)
    mutate = staticmethod(mutate)
    to_index = staticmethod(to_index)
    from_index = staticmethod(from_index)
    to_onehot = staticmethod(to_onehot)
    from_onehot = staticmethod(from_onehot)
    to_graph = staticmethod(to_graph)
    canonical = staticmethod(canonical)
    representative = staticmethod(representative)
    group = staticmethod(group)
    validate = staticmethod(validate)
    to_string = staticmethod(to_string)
    from_string = staticmethod(from_string)
    to_key = staticmethod(to_key)
    to_keys = staticmethod(to_keys)
    from_keys = staticmethod(from_keys)
    hparams = staticmethod(hparams)


SPACE = NHB2Space()
