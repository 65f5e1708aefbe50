"""Training the 200-epoch surrogate's bagged ensemble (one vmapped program) and its data.

The model, its inputs (`Data`: compressed class graphs + one-hot lr/bs), the vmapped bagging
trainer with per-member early stopping on validation R^2, and the grouped splits. The fitted
object, its file format and `fit` are in `nhb.bench.surrogate`, which re-exports these.
"""


from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
from flax import struct, traverse_util

from nhb.models.gin import GIN, MLP, GINRegressor, compact_graphs, take_graphs
from nhb.space import cells as _cells
from nhb.space import nhb2

CELL_DIM = _cells.NUM_EDGES * _cells.NUM_OPS  # cell part of nhb2.to_onehot
MODELS = ("gin", "mlp")


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
    """Hyperparameters of the surrogate ensemble (hashable; a static jit argument).

    Attributes:
        model: "gin" (GIN over the cell graph + MLP over (lr, bs)) or "mlp" (MLP on one-hot).
        num_members: bagging ensemble size (paper: 10).
        gin_layers: GIN depth (assumed 3).
        gin_features: GIN width (assumed 64).
        gin_mlp_depth: Dense layers per GIN layer MLP.
        gin_direction: GIN message direction ("in", "out", "both").
        gin_readout: "sum" or "mean".
        hp_features: MLP over the one-hot (lr, bs), hidden/output widths.
        head_features: hidden widths of the head MLP (a final Dense(1) is added).
        mlp_features: hidden widths of the "mlp" baseline (a final Dense(1) is added).
        epochs: training epochs (the best one per member is kept).
        batch_size: minibatch size.
        learning_rate: peak AdamW learning rate (cosine decay to 0).
        weight_decay: AdamW weight decay.
        valid_fraction: fraction of the training points (grouped by architecture) held out
            for early stopping in `fit`.
    """

    model: str = "gin"
    num_members: int = 10
    gin_layers: int = 3
    gin_features: int = 64
    gin_mlp_depth: int = 2
    gin_direction: str = "both"
    gin_readout: str = "sum"
    hp_features: tuple[int, ...] = (64,)
    head_features: tuple[int, ...] = (64, 64)
    mlp_features: tuple[int, ...] = (128, 128, 128)
    epochs: int = 100
    batch_size: int = 512
    learning_rate: float = 5e-3
    weight_decay: float = 1e-4
    valid_fraction: float = 0.2

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("hp_features", "head_features", "mlp_features"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.num_members < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("num_members, epochs and batch_size must be >= 1")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")

    def to_dict(self) -> dict:
        """JSON-serialisable dict (tuples become lists); `SurrogateConfig(**d)` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def build_model(config: SurrogateConfig) -> nn.Module:
    """The base model of a config: a `GINRegressor`, or the one-hot `MLP` baseline."""
    c = config
    if c.model == "mlp":
        return MLP((*c.mlp_features, 1))
    return GINRegressor(gin=GIN(num_layers=c.gin_layers, features=c.gin_features,
                                mlp_depth=c.gin_mlp_depth, direction=c.gin_direction,
                                readout=c.gin_readout),
                        global_features=c.hp_features, head_features=c.head_features)


@struct.dataclass
class Data:
    """Featurised points (`prepare`).

    Attributes:
        slot: int32 [P] index of each point's class in `classes`.
        onehot: float32 [P, 38] `nhb2.to_onehot` of the point with its representative cell.
        classes: int32 [U] the distinct class ids (0..1010) present.
        graphs: the U class graphs padded as `nhb2.to_graph` (`class_graphs(classes)`).
        compact: the same graphs without padding nodes/edges (`compact_graphs`).
    """

    slot: jax.Array
    onehot: jax.Array
    classes: jax.Array
    graphs: jraph.GraphsTuple
    compact: jraph.GraphsTuple

    @property
    def class_of_point(self) -> np.ndarray:
        """int32 [P] class id of every point (the architecture grouping)."""
        return np.asarray(self.classes)[np.asarray(self.slot)]


def prepare(cfgs: nhb2.Config) -> Data:
    """Featurises a 1-D batch of configs (validated, cells mapped to class representatives)."""
    cfgs = nhb2.validate(jax.tree.map(np.asarray, cfgs))
    if len(cfgs.shape) != 1:
        raise ValueError(f"expected a 1-D batch of configs, got batch shape {cfgs.shape}")
    classes, slot = np.unique(np.asarray(nhb2.canonical(cfgs), np.int32), return_inverse=True)
    graphs = class_graphs(classes)
    return Data(slot=jnp.asarray(slot, jnp.int32), onehot=nhb2.to_onehot(nhb2.representative(cfgs)),
                classes=jnp.asarray(classes, jnp.int32), graphs=graphs,
                compact=compact_graphs(graphs))


def class_graphs(classes) -> jraph.GraphsTuple:
    """Padded graphs (`nhb2.to_graph`, no globals) of the representatives of class ids [U].

    Concrete (NumPy) use only: under `jit` its 4096-row tables become slow-to-compile constants.
    """
    rep = np.asarray(_cells.cell_tables().representative)[np.asarray(classes)]
    zeros = np.zeros(rep.shape, np.int32)
    return nhb2.to_graph(nhb2.make(nhb2.cell_from_index(rep), zeros, zeros))._replace(globals=None)


def _apply(model: nn.Module, params, data: Data, idx: jax.Array, per_point: bool) -> jax.Array:
    """Standardised predictions [B] of one member for the points `idx`."""
    if not isinstance(model, GINRegressor):
        return model.apply(params, data.onehot[idx])[..., 0]
    hp = data.onehot[idx, CELL_DIM:]
    if per_point:  # embed one graph per point: cheaper when the data has many classes
        emb = model.apply(params, take_graphs(data.graphs, data.slot[idx], nhb2.MAX_NODES,
                                             nhb2.MAX_GRAPH_EDGES), method="embed")
    else:  # embed every class once, then gather (a one-hot matmul: no scatter in the backward)
        emb = model.apply(params, data.compact, method="embed")
        emb = jax.nn.one_hot(data.slot[idx], emb.shape[0], dtype=emb.dtype) @ emb
    return model.apply(params, emb, hp, method="predict_head")


@functools.cache
def _example_graph() -> jraph.GraphsTuple:
    return class_graphs(np.zeros(1, np.int32))


def init_params(key: jax.Array, config: SurrogateConfig):
    """Parameters of one base model: Flax's defaults (kernels lecun-normal, biases and GIN eps
    zero) drawn with ONE random call, which compiles much faster than per-layer initialisers."""
    model = build_model(config)
    if isinstance(model, GINRegressor):
        args = (_example_graph(), jnp.zeros((1,), jnp.int32),
                jnp.zeros((1, nhb2.ONEHOT_DIM - CELL_DIM)))
    else:
        args = (jnp.zeros((1, nhb2.ONEHOT_DIM)),)
    shapes = traverse_util.flatten_dict(jax.eval_shape(model.init, jax.random.key(0), *args))
    kernels = [k for k, v in shapes.items() if k[-1] == "kernel"]
    sizes = [int(np.prod(shapes[k].shape)) for k in kernels]
    z = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),)) / 0.87962566103423978
    out, offset = {}, 0
    for k, n in zip(kernels, sizes, strict=True):
        shape = shapes[k].shape
        out[k] = z[offset:offset + n].reshape(shape) / np.sqrt(np.prod(shape[:-1]))
        offset += n
    out.update({k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items() if k not in out})
    return traverse_util.unflatten_dict(out)


def masked_r2(y: jax.Array, p: jax.Array, mask: jax.Array) -> jax.Array:
    """R^2 of predictions `p` for targets `y` over the entries where `mask` is 1."""
    n = jnp.maximum(mask.sum(), 1.0)
    mean = (y * mask).sum() / n
    ss_tot = (mask * (y - mean) ** 2).sum()
    return 1.0 - (mask * (y - p) ** 2).sum() / jnp.maximum(ss_tot, 1e-12)


@functools.partial(jax.jit, static_argnames=("config", "per_point"))
def train_ensemble(key: jax.Array, data: Data, y: jax.Array, train_idx: jax.Array,
                   n_train: jax.Array, val_idx: jax.Array, n_val: jax.Array, *,
                   config: SurrogateConfig, per_point: bool = False) -> dict:
    """Trains the bagging ensemble as one vmapped program.

    Index arrays are padded to static sizes (so that all CV folds share one compilation): only
    the first `n_train` entries of `train_idx` and `n_val` of `val_idx` are used.

    Args:
        key: PRNG key (split into one key per member: init, bootstrap, shuffling).
        data: featurised points (`prepare`).
        y: float32 [P] targets (raw, e.g. accuracy in %).
        train_idx: int32 [T] training point indices (padded; T a multiple of batch_size).
        n_train: number of valid entries of `train_idx` (> 0).
        val_idx: int32 [V] early-stopping point indices (padded).
        n_val: number of valid entries of `val_idx`; 0 disables early stopping (keep last).
        config: the surrogate config (static).
        per_point: embed one graph per minibatch point instead of every class per step.

    Returns:
        Dict: params (leading member axis M), y_mean, y_std (scalars), best_r2 [M],
        best_epoch [M], val_r2 [M, epochs], loss [M, epochs], pred [M, P] (raw units, best
        params).
    """
    model = build_model(config)
    t, b = train_idx.shape[0], config.batch_size
    if t % b:
        raise ValueError(f"padded train size {t} is not a multiple of batch_size {b}")
    steps = t // b
    tmask = (jnp.arange(t) < n_train).astype(jnp.float32)
    vmask = (jnp.arange(val_idx.shape[0]) < n_val).astype(jnp.float32)
    y_train = y[train_idx]
    y_mean = (y_train * tmask).sum() / n_train
    y_std = jnp.sqrt((tmask * (y_train - y_mean) ** 2).sum() / n_train)
    y_std = jnp.where(y_std > 0, y_std, 1.0)
    ys = (y - y_mean) / y_std
    all_idx = jnp.arange(y.shape[0])
    opt = optax.adamw(optax.cosine_decay_schedule(config.learning_rate, config.epochs * steps),
                      weight_decay=config.weight_decay)

    def member(k: jax.Array):
        k_init, k_boot, k_epochs = jax.random.split(k, 3)
        params = init_params(k_init, config)
        boot = train_idx[jax.random.randint(k_boot, (t,), 0, n_train)]

        def loss_fn(p, idx, w):
            err = _apply(model, p, data, idx, per_point) - ys[idx]
            return (w * err**2).sum() / jnp.maximum(w.sum(), 1.0)

        def step(carry, batch):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, boot[batch], tmask[batch])
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss

        def epoch(carry, xs):
            p, s, best_p, best_r2, best_ep = carry
            k_ep, ep = xs
            perm = jax.random.permutation(k_ep, t).reshape(steps, b)
            (p, s), losses = jax.lax.scan(step, (p, s), perm)
            r2 = masked_r2(ys[val_idx], _apply(model, p, data, val_idx, False), vmask)
            better = jnp.where(n_val > 0, r2 > best_r2, True)
            best_p = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, best_p)
            carry = (p, s, best_p, jnp.where(better, r2, best_r2), jnp.where(better, ep, best_ep))
            return carry, (losses.mean(), r2)

        carry = (params, opt.init(params), params, jnp.float32(-jnp.inf), jnp.int32(-1))
        xs = (jax.random.split(k_epochs, config.epochs), jnp.arange(config.epochs))
        (_, _, best_p, best_r2, best_ep), (losses, r2s) = jax.lax.scan(epoch, carry, xs)
        pred = _apply(model, best_p, data, all_idx, False) * y_std + y_mean
        return best_p, best_r2, best_ep, r2s, losses, pred

    params, best_r2, best_ep, r2s, losses, pred = jax.vmap(member)(
        jax.random.split(key, config.num_members))
    return dict(params=params, y_mean=y_mean, y_std=y_std, best_r2=best_r2, best_epoch=best_ep,
                val_r2=r2s, loss=losses, pred=pred)


def fit_indices(key: jax.Array, data: Data, y: np.ndarray, train_idx: np.ndarray,
                val_idx: np.ndarray, config: SurrogateConfig, *, train_size: int | None = None,
                val_size: int | None = None) -> dict:
    """Runs `train_ensemble` on index sets, padding them (to shared sizes if given).

    Args:
        key: PRNG key.
        data: featurised points.
        y: targets [P].
        train_idx: training point indices.
        val_idx: early-stopping point indices (may be empty).
        config: surrogate config.
        train_size: pad train indices to this size (rounded up to a batch multiple).
        val_size: pad validation indices to this size.

    Returns:
        The dict of `train_ensemble`.
    """
    if len(train_idx) == 0:
        raise ValueError("no training points")
    b = config.batch_size
    t = -(-max(train_size or 0, len(train_idx)) // b) * b
    pad = lambda i, n: jnp.asarray(np.concatenate([i, np.zeros(n - len(i))]), jnp.int32)
    per_point = data.compact.nodes["op"].shape[0] > b * nhb2.MAX_NODES
    return train_ensemble(key, data, jnp.asarray(y, jnp.float32), pad(train_idx, t),
                          jnp.int32(len(train_idx)),
                          pad(val_idx, max(val_size or 0, len(val_idx), 1)),
                          jnp.int32(len(val_idx)), config=config, per_point=per_point)


def group_split(key: jax.Array, groups: np.ndarray, fraction: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Splits point indices into (rest, held) by whole groups, `held` ~ `fraction` of points.

    Args:
        key: PRNG key (group order).
        groups: [P] group label (architecture class) of every point.
        fraction: target fraction of points in `held` (whole groups; 0 gives an empty held set).

    Returns:
        Sorted index arrays (rest, held); no group appears in both.
    """
    groups = np.asarray(groups)
    uniq, counts = np.unique(groups, return_counts=True)
    if fraction <= 0 or len(uniq) < 2:
        return np.arange(len(groups)), np.zeros(0, np.int64)
    order = np.asarray(jax.random.permutation(key, len(uniq)))
    cum = np.cumsum(counts[order])
    k = int(np.clip(np.argmin(np.abs(cum - fraction * len(groups))) + 1, 1, len(uniq) - 1))
    held = np.isin(groups, uniq[order[:k]])
    return np.nonzero(~held)[0], np.nonzero(held)[0]


# ----------------------------------------------------------------------------- file format
# MAGIC (8 bytes), uint64 little-endian header length H, JSON header (H bytes), then an .npz
# payload (no pickles) of "param/<path>", "y_mean", "y_std"; the header holds the format
# version, kind, config, meta (code version, date, training info), payload size and sha256.
